# The three training stages per fold: multi-task (emotion + gender) → stage 1 (GMP frame CE)
# → stage 2 (utterance emotion, AM-Softmax). Each writes a model folder; per-epoch state for
# resuming lives in the undeclared folder <model>.resume beside it.


rule train_mtl:
    input:
        unpack(mtl_init),
        manifest="results/manifest.tsv",
        folds="results/folds.tsv",
    output:
        model=directory("results/{exp}/fold{fold}/mtl"),
    params:
        stage="mtl",
        settings=mtl_settings,
        corpus=config["corpus"],
        runtime=RUNTIME,
        state_dir=state_dir,
    threads: config["threads"]
    resources:
        gpu=1,
        mem_mb=32000,
        runtime=train_runtime,
    log:
        "results/logs/{exp}/fold{fold}/mtl.log",
    benchmark:
        "results/benchmarks/{exp}/fold{fold}/mtl.tsv"
    conda:
        ENV
    script:
        "../scripts/train_stage.py"


rule train_stage1:
    input:
        unpack(stage1_init),
        unpack(gmp_label_files),
        manifest="results/manifest.tsv",
        folds="results/folds.tsv",
    output:
        model=directory("results/{exp}/fold{fold}/stage1"),
    params:
        stage="stage1",
        settings=stage1_settings,
        corpus=config["corpus"],
        runtime=RUNTIME,
        state_dir=state_dir,
    threads: config["threads"]
    resources:
        gpu=1,
        mem_mb=32000,
        runtime=train_runtime,
    log:
        "results/logs/{exp}/fold{fold}/stage1.log",
    benchmark:
        "results/benchmarks/{exp}/fold{fold}/stage1.tsv"
    conda:
        ENV
    script:
        "../scripts/train_stage.py"


rule train_stage2:
    input:
        unpack(stage2_init),
        manifest="results/manifest.tsv",
        folds="results/folds.tsv",
    output:
        model=directory("results/{exp}/fold{fold}/stage2"),
    params:
        stage="stage2",
        settings=stage2_settings,
        corpus=config["corpus"],
        runtime=RUNTIME,
        state_dir=state_dir,
    threads: config["threads"]
    resources:
        gpu=1,
        mem_mb=32000,
        runtime=train_runtime,
    log:
        "results/logs/{exp}/fold{fold}/stage2.log",
    benchmark:
        "results/benchmarks/{exp}/fold{fold}/stage2.tsv"
    conda:
        ENV
    script:
        "../scripts/train_stage.py"
