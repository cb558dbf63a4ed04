# Per experiment: the stages it used, per-fold predictions and metrics on the test split, tables, plots;
# the comparison across experiments.


rule record_stages:
    output:
        stages="results/{exp}/stages.tsv",
    log:
        "results/logs/{exp}/stages.log",
    conda:
        ENV
    params:
        rows=stage_rows,
    script:
        "../scripts/record_stages.py"


rule deploy_model:
    input:
        model=deploy_stage2,
        folds="results/{exp}/metrics/folds.tsv",
        summary="results/{exp}/metrics/summary.tsv",
        comparison="results/comparison.tsv",
    output:
        model=directory("results/{exp}/deploy"),
    log:
        "results/logs/{exp}/deploy.log",
    conda:
        ENV
    params:
        stage_ids=deploy_stage_ids,
    script:
        "../scripts/deploy_model.py"


rule evaluate_fold:
    input:
        unpack(fold_data),
        model=stage2_model,
    output:
        predictions="results/{exp}/{run}/predictions.tsv",
        metrics="results/{exp}/{run}/metrics.tsv",
    log:
        "results/logs/{exp}/{run}/evaluate.log",
    conda:
        ENV
    threads: config["runtime"]["threads"]
    resources:
        gpu=1,
        mem_mb=workplan.RULES["evaluate_fold"].mem_mb,
        runtime=workplan.minutes("evaluate_fold"),
    params:
        fold=run_fold,
    script:
        "../scripts/evaluate_fold.py"


rule summarize_experiment:
    input:
        predictions=run_predictions,
    output:
        folds=report(
            "results/{exp}/metrics/folds.tsv",
            caption="../report/folds.rst",
            category="{exp}",
            labels={"table": "per fold (TSV)"},
        ),
        summary=report(
            "results/{exp}/metrics/summary.tsv",
            caption="../report/summary.rst",
            category="{exp}",
            labels={"table": "summary (TSV)"},
        ),
        folds_html=report(
            "results/{exp}/metrics/folds.html",
            caption="../report/folds.rst",
            category="{exp}",
            labels={"table": "per fold"},
        ),
        summary_html=report(
            "results/{exp}/metrics/summary.html",
            caption="../report/summary.rst",
            category="{exp}",
            labels={"table": "summary"},
        ),
        settings_html=report(
            "results/{exp}/settings.html",
            caption="../report/settings.rst",
            category="{exp}",
            labels={"table": "settings"},
        ),
    log:
        "results/logs/{exp}/metrics/summarize.log",
    conda:
        ENV
    params:
        classes=config["corpus"]["classes"],
        runs=run_keys,
        settings=shown_settings,
    script:
        "../scripts/summarize_experiment.py"


rule plot_experiment:
    input:
        unpack(stage_models),
        predictions=run_predictions,
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
    log:
        "results/logs/{exp}/plots/plot.log",
    conda:
        ENV
    params:
        classes=config["corpus"]["classes"],
    script:
        "../scripts/plot_experiment.py"


rule compare_experiments:
    input:
        predictions=all_run_predictions,
        manifest="results/manifest.tsv",
    output:
        comparison=report(
            "results/comparison.tsv",
            caption="../report/comparison.rst",
            category="comparison",
            labels={"table": "comparison (TSV)"},
        ),
        html=report(
            "results/comparison.html",
            caption="../report/comparison.rst",
            category="comparison",
            labels={"table": "comparison"},
        ),
    log:
        "results/logs/compare_experiments.log",
    conda:
        ENV
    params:
        classes=config["corpus"]["classes"],
        runs=all_run_keys,
        reference=reference_experiment(),
        stats=config["stats"],
    script:
        "../scripts/compare_experiments.py"


rule ablation:
    input:
        predictions=ablation_predictions,
        manifest="results/manifest.tsv",
    output:
        table=report(
            "results/ablation.tsv",
            caption="../report/ablation.rst",
            category="ablation",
            labels={"table": "ablation grid (TSV)"},
        ),
        html=report(
            "results/ablation.html",
            caption="../report/ablation.rst",
            category="ablation",
            labels={"table": "ablation grid"},
        ),
        plot=report(
            "results/ablation.png",
            caption="../report/ablation.rst",
            category="ablation",
            labels={"figure": "ablation grid"},
        ),
    log:
        "results/logs/ablation.log",
    conda:
        ENV
    params:
        classes=config["corpus"]["classes"],
        runs=ablation_run_keys,
        base=grid_base(),
        points=ablation_points(),
        stats=config["stats"],
    script:
        "../scripts/summarize_ablation.py"
