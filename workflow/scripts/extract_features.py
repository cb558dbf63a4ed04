"""Rule extract_features: hidden states of the GMP layers for every utterance of one fold → HDF5."""

import logging

import pandas as pd

from gmptl.backbone import SpeechEncoder, check_layers, input_normalization, load_backbone
from gmptl.features import extract_features
from gmptl.fileio import code_version, stable_hash
from gmptl.folds import fold_table
from gmptl.runtime import configure_torch, resolve_device, setup_logging

log = logging.getLogger("extract_features")


def main(manifest_path, folds_path, model_dir, out_path, fold, settings, corpus, runtime, threads) -> None:
    configure_torch(threads)
    device = resolve_device(runtime["device"])
    table = fold_table(pd.read_csv(folds_path, sep="\t"), pd.read_csv(manifest_path, sep="\t"), fold)
    layers = settings["gmp"]["layers"]
    backbone = f"{model_dir}/backbone"
    model = load_backbone(backbone)
    check_layers(model, layers, backbone)
    del model.encoder.layers[max(layers) :]  # later layers are never read
    encoder = SpeechEncoder(model, input_normalization(backbone))
    attrs = {
        "backbone": backbone,
        "fold": fold,
        "seed": settings["seed"],
        "config_hash": stable_hash(settings),
        "code_version": code_version(),
    }
    log.info("fold %d: %d utterances on %s, layers %s", fold, len(table), device, layers)
    extract_features(
        encoder,
        table,
        layers,
        out_path,
        sample_rate=corpus["sample_rate"],
        on_format_mismatch=corpus["on_format_mismatch"],
        batch_seconds=settings["features"]["batch_seconds"],
        device=device,
        precision=runtime["precision"],
        attrs=attrs,
    )


if __name__ == "__main__":
    setup_logging(snakemake.log[0])
    main(
        snakemake.input.manifest,
        snakemake.input.folds,
        snakemake.input.model,
        snakemake.output.features,
        int(snakemake.wildcards.fold),
        snakemake.params.settings,
        snakemake.params.corpus,
        snakemake.params.runtime,
        snakemake.threads,
    )
