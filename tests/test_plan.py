"""`gmptl plan`: job counts as the workflow plans them, exact disk arithmetic on a synthetic manifest."""

from __future__ import annotations

import re

import pandas as pd
import pytest
import torch
import yaml
from conftest import ROOT

from gmptl.backbone import load_backbone
from gmptl.cache import load_config
from gmptl.cli import main
from gmptl.model import build_model
from gmptl.plan import (
    backbone_shape,
    corpus_from_files,
    corpus_from_statistics,
    experiment_plans,
    make_plan,
    model_parameters,
)
from gmptl.stages import stage_spec
from gmptl.workplan import GPU_RULES, LOCAL_RULES, RULES

CLASSES = ["neu", "hap", "ang", "sad"]
# Two sessions, four utterances each; durations give 49 (1 s) and 99 (2 s) frames with HuBERT's convolutions.
DURATIONS = {1: [1.0, 1.0, 2.0, 2.0], 2: [1.0, 2.0, 2.0, 2.0]}


def write_manifest(folder) -> None:
    rows = []
    for session, durations in DURATIONS.items():
        for i, seconds in enumerate(durations):
            gender = "FM"[i % 2]
            rows.append(
                {
                    "utt_id": f"Ses{session:02d}F_impro01_{gender}{i:03d}",
                    "path": f"/corpus/{session}/{i}.wav",
                    "session": session,
                    "speaker": f"Ses{session:02d}{gender}",
                    "gender": gender,
                    "emotion": CLASSES[i],
                    "dialog": f"Ses{session:02d}F_impro01",
                    "duration_s": seconds,
                }
            )
    manifest = pd.DataFrame(rows)
    (folder / "results").mkdir(parents=True, exist_ok=True)
    manifest.to_csv(folder / "results/manifest.tsv", sep="\t", index=False)
    # fold N tests session N; the other session trains, its first utterance validates
    folds = []
    for fold in DURATIONS:
        for row in manifest.itertuples():
            split = "test" if row.session == fold else ("valid" if row.utt_id.endswith("000") else "train")
            folds.append({"fold": fold, "utt_id": row.utt_id, "split": split})
    pd.DataFrame(folds).to_csv(folder / "results/folds.tsv", sep="\t", index=False)


def config_for(tmp_path, backbone: str, **extra) -> dict:
    settings = {
        "corpus": {"root": str(tmp_path / "corpus"), "sessions": [1, 2]},
        "backbone": backbone,
        "gmp": {"layers": [1, 2], "k": [4, 8]},
        "experiments": {"gmp_tl": {}, "finetune": {"stage2": {"init": "pretrained"}}},
        **extra,
    }
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(settings))
    return load_config([path])


@pytest.fixture
def workdir(tmp_path):
    write_manifest(tmp_path)
    return tmp_path


def counts(plan) -> dict[tuple[str, str], int]:
    return {(job.rule, job.what): job.jobs for job in plan.jobs}


def test_frame_formula_matches_the_backbone(tiny_backbone):
    shape = backbone_shape(tiny_backbone)
    model = load_backbone(tiny_backbone)
    samples = torch.tensor([399, 400, 719, 720, 16000, 32000, 72901])
    expected = model._get_feat_extract_output_lengths(samples).tolist()
    assert [shape.frames(int(n)) for n in samples] == [max(0, e) for e in expected]
    assert shape.frames(16000) == 49 and shape.frames(32000) == 99


def test_backbone_shape_comes_from_its_config_when_on_disk(tiny_backbone):
    shape = backbone_shape(tiny_backbone)
    model = load_backbone(tiny_backbone)
    assert (shape.hidden, shape.layers) == (32, 2)
    assert shape.params == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("name", "hidden", "layers", "params"),
    [
        ("facebook/hubert-base-ls960", 768, 12, 94_371_712),  # HubertModel of the hub config, counted once
        ("facebook/hubert-large-ll60k", 1024, 24, 315_438_720),
        ("microsoft/wavlm-large", 1024, 24, 315_453_120),
    ],
)
def test_known_backbones_are_planned_without_their_files(name, hidden, layers, params):
    shape = backbone_shape(name)
    assert (shape.hidden, shape.layers, shape.params, shape.source) == (
        hidden,
        layers,
        params,
        "table of known backbones",
    )


def test_unknown_backbone_not_on_disk_is_one_clear_error(tmp_path):
    from gmptl.errors import BackboneError

    with pytest.raises(BackboneError, match="not on disk and not in the table of known backbones"):
        backbone_shape(str(tmp_path / "nowhere"))


def test_model_parameters_match_the_built_models(workdir, tiny_backbone):
    config = config_for(workdir, tiny_backbone, stage2={"classifier": "amsoftmax", "pooling": "attentive"})
    shape = backbone_shape(tiny_backbone)
    for stages in experiment_plans(config).values():
        for kind in ("mtl", "stage1", "stage2"):
            if kind in stages:
                model = build_model(tiny_backbone, stage_spec(stages[kind].recipe, CLASSES).heads)
                assert model_parameters(stages[kind], shape, CLASSES) == sum(p.numel() for p in model.parameters())


def test_disk_arithmetic_is_exact_on_a_small_manifest(workdir, tiny_backbone):
    config = config_for(workdir, tiny_backbone)
    shape = backbone_shape(tiny_backbone)  # hidden 32
    plan = make_plan(config, corpus_from_files(config, workdir / "results/manifest.tsv", workdir / "results/folds.tsv"))
    frames_per_fold = 3 * 49 + 5 * 99  # every utterance is in every fold (train, valid or test): 642
    disk = {item.kind: item for item in plan.disk}
    # one features recipe × 2 folds × frames × hidden 32 × 2 bytes × 2 layers
    assert disk["features"].files == 2
    assert disk["features"].bytes == 2 * frames_per_fold * 32 * 2 * 2
    # (layer, k) in {1, 2} × {4, 8}, per fold: 4-byte labels for every frame + k × 32 float32 centroids
    assert disk["labels"].files == 8
    assert disk["labels"].bytes == 2 * sum(frames_per_fold * 4 + k * 32 * 4 for k in (4, 8, 4, 8))
    # mtl, stage1, stage2 of gmp_tl and stage2 of finetune, per fold, float32
    stages = {kind: s for s in experiment_plans(config).values() for kind, s in s.items()}
    finetune = experiment_plans(config)[("finetune", 42)]["stage2"]
    models = [stages["mtl"], stages["stage1"], experiment_plans(config)[("gmp_tl", 42)]["stage2"], finetune]
    assert disk["models"].files == 8
    assert disk["models"].bytes == 2 * 4 * sum(model_parameters(s, shape, CLASSES) for s in models)


def test_audio_hours_per_fold_and_split(workdir, tiny_backbone):
    config = config_for(workdir, tiny_backbone)
    corpus = corpus_from_files(config, workdir / "results/manifest.tsv", workdir / "results/folds.tsv")
    assert corpus.hours(1, "test") == pytest.approx(6.0 / 3600)
    assert corpus.hours(1, "valid") == pytest.approx(1.0 / 3600)
    assert corpus.hours(1, "train") == pytest.approx(6.0 / 3600)
    assert corpus.hours(2, "test") == pytest.approx(7.0 / 3600)


def test_shared_stages_count_once_and_seeds_multiply(workdir, tiny_backbone):
    experiments = {
        "gmp_tl": {},
        "finetune": {"stage2": {"init": "pretrained"}},
        "single_k": {"gmp": {"k": [4]}},  # shares mtl, features and its label files with gmp_tl
    }
    config = config_for(workdir, tiny_backbone, experiments=experiments)
    corpus = corpus_from_files(config, workdir / "results/manifest.tsv", workdir / "results/folds.tsv")
    jobs = counts(make_plan(config, corpus))
    assert jobs[("train_stage", "mtl")] == 2
    assert jobs[("extract_features", "features")] == 2
    assert jobs[("fit_kmeans", "labels per (layer, k)")] == 2 * 4
    assert jobs[("train_stage", "stage1")] == 2 * 2
    assert jobs[("train_stage", "stage2")] == 2 * 3
    assert jobs[("evaluate_fold", "predictions")] == 2 * 3
    assert jobs[("record_stages", "stages.tsv")] == 3

    seeded = counts(make_plan(config_for(workdir, tiny_backbone, experiments=experiments, seeds=[1, 2]), corpus))
    assert seeded[("train_stage", "mtl")] == 2 * 2
    assert seeded[("evaluate_fold", "predictions")] == 2 * 3 * 2


def test_gpu_hours_are_the_rules_runtimes(workdir, tiny_backbone):
    config = config_for(workdir, tiny_backbone)
    corpus = corpus_from_files(config, workdir / "results/manifest.tsv", workdir / "results/folds.tsv")
    plan = make_plan(config, corpus)
    hours = {(job.rule, job.what): job.gpu_hours for job in plan.jobs}
    assert hours[("train_stage", "stage2")] == 2 * 2 * 240 / 60
    assert hours[("fit_kmeans", "labels per (layer, k)")] == 2 * 4 * 120 / 60
    assert hours[("evaluate_fold", "predictions")] == 2 * 2 * 30 / 60


def test_rule_files_take_their_resources_from_the_workplan():
    """One source for what a rule asks of the scheduler: the rule files name gmptl.workplan, never a number."""
    rules = "\n".join(path.read_text() for path in (ROOT / "workflow/rules").glob("*.smk"))
    for rule in GPU_RULES:
        body = re.search(rf"\nrule {rule}:\n(.*?)(?=\nrule |\Z)", rules, re.S)
        assert body, f"rule {rule} not found"
        resources = re.search(r"resources:\n(.*?)\n    \w+:", body.group(1), re.S).group(1)
        assert f'workplan.RULES["{rule}"].mem_mb' in resources, (rule, resources)
        assert re.search(rf'runtime=.*(workplan\.minutes\("{rule}"\)|train_runtime)', resources), (rule, resources)
        assert not re.search(r"(?<!reported)=\s*\d{2,}", resources), (rule, resources)  # no literal limits
    local = re.search(r"^localrules:\n((?:    \w+,\n)+)", (ROOT / "workflow/Snakefile").read_text(), re.M).group(1)
    assert sorted(name.strip(" ,") for name in local.splitlines()) == sorted(LOCAL_RULES)
    assert RULES["train_stage"].minutes_grow_per_attempt


def test_statistics_plan_spreads_utterances_over_the_folds(tmp_path, tiny_backbone):
    config = config_for(tmp_path, tiny_backbone, corpus={"root": str(tmp_path), "sessions": [1, 2, 3]})
    corpus = corpus_from_statistics(config, utterances=10, mean_seconds=2.0)
    assert sorted(corpus.folds) == [1, 2, 3]
    assert [int((t["split"] == "test").sum()) for t in corpus.folds.values()] == [4, 3, 3]
    assert all(len(t) == 10 for t in corpus.folds.values())
    assert corpus.hours(1) == pytest.approx(20.0 / 3600)


def test_cli_plans_the_built_manifest(workdir, tiny_backbone, capsys):
    config_for(workdir, tiny_backbone)
    assert main(["plan", "--configfile", str(workdir / "plan.yaml"), "-d", str(workdir)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"GPU jobs, requested GPU hours\s+22\s+54\.0", out), out  # 2 folds × (4 train + 1 + 4 + 2 eval)
    assert re.search(r"features\s+2\s", out) and "total" in out


def test_cli_without_a_manifest_says_what_to_do(tmp_path, tiny_backbone, capsys):
    config_for(tmp_path, tiny_backbone)
    assert main(["plan", "--configfile", str(tmp_path / "plan.yaml"), "-d", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "results/manifest.tsv' does not exist" in err and "--utterances N --mean-seconds S" in err


def test_gpu_memory_plan_on_the_paper_config_fits_24_gib(capsys):
    assert main(["plan", "--utterances", "5531", "--mean-seconds", "4.556", "--gpu-mem", "24"]) == 0
    out = capsys.readouterr().out
    rows = re.findall(
        r"^  (train_stage \w+|extract_features)\s+facebook/hubert-base-ls960\s+.*?([\d.]+)  (yes|NO.*)$", out, re.M
    )
    assert [job for job, _, _ in rows] == [
        "train_stage mtl",
        "train_stage stage1",
        "train_stage stage2",
        "extract_features",
    ]
    assert all(verdict == "yes" for _, _, verdict in rows)
    assert all(1.0 < float(gib) < 24 for _, gib, _ in rows)


def test_gpu_memory_plan_names_the_job_and_the_key_when_it_does_not_fit(tmp_path, capsys):
    big = tmp_path / "big.yaml"
    big.write_text("backbone: microsoft/wavlm-large\ntrain: {batch_size: 32, max_crop_s: 16.0}\n")
    assert (
        main(["plan", "--utterances", "5531", "--mean-seconds", "4.556", "--gpu-mem", "24", "--configfile", str(big)])
        == 1
    )
    captured = capsys.readouterr()
    assert re.search(r"train_stage mtl .*NO: lower mtl\.train\.batch_size \(or train\.batch_size\)", captured.out)
    assert "train_stage mtl (microsoft/wavlm-large, batch 32 × 16 s) needs about" in captured.err
    assert re.search(r"^  train_stage stage1 .*yes$", captured.out, re.M)  # stage 1 keeps its own batch of 8


def test_gpu_memory_grows_with_batch_crop_and_precision():
    from gmptl.gpumem import shape_from_config, training_memory
    from gmptl.plan import backbone_config

    shape = shape_from_config(backbone_config("facebook/hubert-base-ls960")[0])

    def peak(**kw):
        args = {"batch_size": 8, "crop_s": 8.0, "precision": "bf16", "freeze_feature_encoder": True, **kw}
        return training_memory(shape, **args).total

    assert peak(batch_size=16) > peak() and peak(crop_s=16.0) > peak() and peak(precision="fp32") > peak()
