"""gmptl: GMP-TL speech emotion recognition on IEMOCAP (library behind the Snakemake workflow)."""

__version__ = "0.1.0"
