# GMP extraction: frame features of the multi-task model → k-means per (layer, k) → frame labels.
# Outputs are cached by recipe id (results/cache/features/<id>, results/cache/gmp/<id>).


if BUILDS.backbone:

    rule make_tiny_backbone:
        output:
            backbone=directory(config["backbone"]),
        log:
            "results/logs/make_tiny_backbone.log",
        conda:
            ENV
        params:
            demo=config["demo"],
        script:
            "../scripts/make_tiny_backbone.py"


rule extract_features:
    input:
        unpack(features_input),
    output:
        features=bulky(recipes.FEATURES_FILE),
    log:
        "results/logs/cache/features/{id}/fold{fold}.log",
    benchmark:
        "results/benchmarks/cache/features/{id}/fold{fold}.tsv"
    conda:
        ENV
    threads: config["runtime"]["threads"]
    resources:
        gpu=1,
        mem_mb=workplan.RULES["extract_features"].mem_mb,
        runtime=workplan.minutes("extract_features"),
    params:
        recipe=features_recipe,
        recipe_file=recipe_path,
    script:
        "../scripts/extract_features.py"


rule fit_kmeans:
    input:
        unpack(kmeans_input),
    output:
        labels=recipes.LABELS_FILE,
    log:
        "results/logs/cache/gmp/{id}/fold{fold}/layer{layer}_k{k}.log",
    benchmark:
        "results/benchmarks/cache/gmp/{id}/fold{fold}/layer{layer}_k{k}.tsv"
    conda:
        ENV
    threads: config["runtime"]["threads"]
    resources:
        gpu=1,
        mem_mb=workplan.RULES["fit_kmeans"].mem_mb,
        runtime=workplan.minutes("fit_kmeans"),
    params:
        recipe=kmeans_recipe,
        recipe_file=recipe_path,
    script:
        "../scripts/fit_kmeans.py"
