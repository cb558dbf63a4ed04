# GMP extraction: frame features of the multi-task model → k-means per (layer, k) → frame labels.


if DEMO:

    rule make_tiny_backbone:
        output:
            backbone=directory(config["backbone"]),
        params:
            demo=config["demo"],
        log:
            "results/logs/make_tiny_backbone.log",
        conda:
            ENV
        script:
            "../scripts/make_tiny_backbone.py"


rule extract_features:
    input:
        manifest="results/manifest.tsv",
        folds="results/folds.tsv",
        model=feature_model,
    output:
        features=bulky("results/{exp}/fold{fold}/features.h5"),
    params:
        settings=feature_settings,
        corpus=config["corpus"],
        runtime=RUNTIME,
    threads: config["threads"]
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=120,
    log:
        "results/logs/{exp}/fold{fold}/features.log",
    benchmark:
        "results/benchmarks/{exp}/fold{fold}/features.tsv"
    conda:
        ENV
    script:
        "../scripts/extract_features.py"


rule fit_kmeans:
    input:
        features="results/{exp}/fold{fold}/features.h5",
    output:
        labels="results/{exp}/fold{fold}/gmp/layer{layer}_k{k}.h5",
    params:
        settings=kmeans_settings,
        runtime=RUNTIME,
    threads: config["threads"]
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=120,
    log:
        "results/logs/{exp}/fold{fold}/gmp/layer{layer}_k{k}.log",
    benchmark:
        "results/benchmarks/{exp}/fold{fold}/gmp/layer{layer}_k{k}.tsv"
    conda:
        ENV
    script:
        "../scripts/fit_kmeans.py"
