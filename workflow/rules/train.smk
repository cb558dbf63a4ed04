# Training: one rule for the three stages per fold — multi-task (emotion + gender) → stage 1 (GMP
# frame CE) → stage 2 (utterance emotion, AM-Softmax). What a stage is comes from its recipe; its
# model folder lives under results/cache/<stage>/<id>/fold<N>, per-epoch state for resuming in the
# undeclared folder beside it (<model>.resume).


rule train_stage:
    input:
        unpack(training_input),
    output:
        model=directory(recipes.MODEL_DIR),
    log:
        "results/logs/cache/{stage}/{id}/fold{fold}.log",
    benchmark:
        "results/benchmarks/cache/{stage}/{id}/fold{fold}.tsv"
    retries: 2
    conda:
        ENV
    threads: config["runtime"]["threads"]
    resources:
        gpu=1,
        mem_mb=workplan.RULES["train_stage"].mem_mb,
        runtime=train_runtime,
    params:
        recipe=training_recipe,
        recipe_file=recipe_path,
        state_dir=state_dir,
    script:
        "../scripts/train_stage.py"
