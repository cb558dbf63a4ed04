# Per experiment: the stages it used, per-fold predictions and metrics on the test split, tables, plots;
# the comparison across experiments.


rule record_stages:
    output:
        stages="results/{exp}/stages.tsv",
    params:
        rows=stage_rows,
    log:
        "results/logs/{exp}/stages.log",
    conda:
        ENV
    script:
        "../scripts/record_stages.py"


rule evaluate_fold:
    input:
        unpack(fold_data),
        model=stage2_model,
    output:
        predictions="results/{exp}/fold{fold}/predictions.tsv",
        metrics="results/{exp}/fold{fold}/metrics.tsv",
    threads: config["threads"]
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=30,
    log:
        "results/logs/{exp}/fold{fold}/evaluate.log",
    conda:
        ENV
    script:
        "../scripts/evaluate_fold.py"


rule summarize_experiment:
    input:
        metrics=fold_metrics,
        predictions=fold_predictions,
    output:
        folds=report(
            "results/{exp}/metrics/folds.tsv",
            caption="../report/folds.rst",
            category="{exp}",
            labels={"table": "per fold"},
        ),
        summary=report(
            "results/{exp}/metrics/summary.tsv",
            caption="../report/summary.rst",
            category="{exp}",
            labels={"table": "summary"},
        ),
    params:
        classes=config["corpus"]["classes"],
    log:
        "results/logs/{exp}/metrics/summarize.log",
    conda:
        ENV
    script:
        "../scripts/summarize_experiment.py"


rule plot_experiment:
    input:
        unpack(stage_models),
        predictions=fold_predictions,
    output:
        confusion=report(
            "results/{exp}/plots/confusion.png",
            caption="../report/confusion.rst",
            category="{exp}",
            labels={"figure": "confusion matrix"},
        ),
        curves=report(
            "results/{exp}/plots/training_curves.png",
            caption="../report/curves.rst",
            category="{exp}",
            labels={"figure": "training curves"},
        ),
    params:
        classes=config["corpus"]["classes"],
    log:
        "results/logs/{exp}/plots/plot.log",
    conda:
        ENV
    script:
        "../scripts/plot_experiment.py"


rule compare_experiments:
    input:
        unpack(experiment_summaries),
    output:
        comparison=report(
            "results/comparison.tsv",
            caption="../report/comparison.rst",
            category="comparison",
        ),
    log:
        "results/logs/compare_experiments.log",
    conda:
        ENV
    script:
        "../scripts/compare_experiments.py"
