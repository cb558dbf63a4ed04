"""Rule fit_kmeans: k-means of one layer at one k on a fold's training frames; labels for all frames."""

from gmptl.fileio import code_version, stable_hash
from gmptl.gmp import fit_gmp_labels
from gmptl.runtime import configure_torch, resolve_device, setup_logging


def main(features_path, out_path, layer, k, settings, runtime, threads) -> None:
    configure_torch(threads)
    fit_gmp_labels(
        features_path,
        layer,
        k,
        out_path,
        settings=settings["kmeans"],
        seed=settings["seed"],
        device=resolve_device(runtime["device"]),
        attrs={"config_hash": stable_hash(settings), "code_version": code_version()},
    )


if __name__ == "__main__":
    setup_logging(snakemake.log[0])
    w = snakemake.wildcards
    main(
        snakemake.input.features,
        snakemake.output.labels,
        int(w.layer),
        int(w.k),
        snakemake.params.settings,
        snakemake.params.runtime,
        snakemake.threads,
    )
