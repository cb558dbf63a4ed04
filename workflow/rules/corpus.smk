# Corpus → manifest and leave-one-session-out folds; the synthetic demo corpus.


# Only with demo.enabled: a rule whose output is corpus.root must never exist for a real corpus.
if BUILDS.corpus:

    rule make_demo_corpus:
        output:
            corpus=directory(CORPUS_ROOT),
        log:
            "results/logs/make_demo_corpus.log",
        conda:
            ENV
        params:
            demo=config["demo"],
            sessions=config["corpus"]["sessions"],
        script:
            "../scripts/make_demo_corpus.py"


rule build_manifest:
    input:
        corpus=corpus_input,
    output:
        manifest="results/manifest.tsv",
        counts="results/manifest_counts.tsv",
    log:
        "results/logs/build_manifest.log",
    conda:
        ENV
    params:
        corpus=DATA["corpus"],
        corpus_state=corpus_state(),
    script:
        "../scripts/build_manifest.py"


checkpoint make_folds:
    input:
        manifest="results/manifest.tsv",
    output:
        folds="results/folds.tsv",
    log:
        "results/logs/make_folds.log",
    conda:
        ENV
    params:
        folds=config["folds"],
        seed=config["seed"],
    script:
        "../scripts/make_folds.py"


rule make_deploy_split:
    input:
        manifest="results/manifest.tsv",
    output:
        split="results/deploy_split.tsv",
    log:
        "results/logs/make_deploy_split.log",
    conda:
        ENV
    params:
        folds=config["folds"],
        seed=config["seed"],
    script:
        "../scripts/make_deploy_split.py"
