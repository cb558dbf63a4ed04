# Corpus → manifest and leave-one-session-out folds; the synthetic demo corpus.


# Only with demo.enabled: a rule whose output is corpus.root must never exist for a real corpus.
if BUILDS.corpus:

    rule make_demo_corpus:
        output:
            corpus=directory(CORPUS_ROOT),
        params:
            demo=config["demo"],
            sessions=config["corpus"]["sessions"],
        log:
            "results/logs/make_demo_corpus.log",
        conda:
            ENV
        script:
            "../scripts/make_demo_corpus.py"


rule build_manifest:
    input:
        corpus=corpus_input,
    output:
        manifest="results/manifest.tsv",
        counts="results/manifest_counts.tsv",
    params:
        corpus=DATA["corpus"],
        corpus_state=corpus_state(),
    log:
        "results/logs/build_manifest.log",
    conda:
        ENV
    script:
        "../scripts/build_manifest.py"


checkpoint make_folds:
    input:
        manifest="results/manifest.tsv",
    output:
        folds="results/folds.tsv",
    params:
        folds=config["folds"],
        seed=config["seed"],
    log:
        "results/logs/make_folds.log",
    conda:
        ENV
    script:
        "../scripts/make_folds.py"


rule make_deploy_split:
    input:
        manifest="results/manifest.tsv",
    output:
        split="results/deploy_split.tsv",
    params:
        folds=config["folds"],
        seed=config["seed"],
    log:
        "results/logs/make_deploy_split.log",
    conda:
        ENV
    script:
        "../scripts/make_deploy_split.py"
