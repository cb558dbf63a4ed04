# Training: one rule for the three stages per fold — multi-task (emotion + gender) → stage 1 (GMP
# frame CE) → stage 2 (utterance emotion, AM-Softmax). What a stage is comes from its recipe; its
# model folder lives under results/cache/<stage>/<id>/fold<N>, the state for resuming in the
# undeclared folder beside it (<model>.resume).
#
# Retries are for time limits and pre-emption (the job resumes, with a longer time limit). A
# deterministic failure (bad input or config, a full disk) leaves <model>.failed.json beside the model
# folder; a retry that finds it asks for no GPU, 4 GB and five minutes, and only reports the failure again.

from gmptl.retry import AfterFailure


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
        gpu=AfterFailure(recipes.MODEL_DIR, normal=1, reported=0),
        mem_mb=AfterFailure(
            recipes.MODEL_DIR,
            normal=workplan.RULES["train_stage"].mem_mb,
            reported=1000,
        ),
        runtime=AfterFailure(recipes.MODEL_DIR, normal=train_runtime, reported=1),
        attempt=job_attempt,
    params:
        recipe=training_recipe,
        recipe_file=recipe_path,
        state_dir=state_dir,
    script:
        "../scripts/train_stage.py"
