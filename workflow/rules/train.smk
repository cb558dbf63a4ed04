# Training: one rule for the three stages per fold — multi-task (emotion + gender) → stage 1 (GMP
# frame CE) → stage 2 (utterance emotion, AM-Softmax). What a stage is comes from its recipe; its
# model folder lives under results/cache/<stage>/<id>/fold<N>, the state for resuming in the
# undeclared folder beside it (<model>.resume).


rule train_stage:
    input:
        unpack(training_input),
    output:
        model=directory(recipes.MODEL_DIR),
    params:
        recipe=training_recipe,
        state_dir=state_dir,
    threads: config["threads"]
    resources:
        gpu=1,
        mem_mb=32000,
        runtime=train_runtime,
    retries: 2
    log:
        "results/logs/cache/{stage}/{id}/fold{fold}.log",
    benchmark:
        "results/benchmarks/cache/{stage}/{id}/fold{fold}.tsv"
    conda:
        ENV
    script:
        "../scripts/train_stage.py"
