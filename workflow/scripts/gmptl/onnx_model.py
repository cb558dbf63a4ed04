"""An exported ONNX folder (`gmptl export --to onnx`) read back and scored with onnxruntime.

The folder holds `model.onnx` (raw audio → scores, probs; see `gmptl.export`) and `gmptl-onnx.json` (classes,
sample rate, shortest input, the graph's sha256). onnxruntime is the `onnx` extra (`pip install gmptl[onnx]`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import BackboneError
from .fileio import file_digest

ONNX_FORMAT = "gmptl-onnx/1"
ONNX_META = "gmptl-onnx.json"
ONNX_FILE = "model.onnx"


def is_onnx_folder(path: str | Path) -> bool:
    return (Path(path) / ONNX_META).is_file()


def read_onnx_folder(folder: str | Path) -> dict:
    """`ONNX_META` of an exported folder, its graph checked against the recorded sha256."""
    folder = Path(folder)
    try:
        description = json.loads((folder / ONNX_META).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BackboneError(f"'{folder / ONNX_META}' cannot be read ({err}); export the model again") from err
    if not isinstance(description, dict) or description.get("format") != ONNX_FORMAT:
        raise BackboneError(f"'{folder / ONNX_META}' is not a {ONNX_FORMAT} description; export the model again")
    graph = folder / ONNX_FILE
    if not graph.is_file() or file_digest(graph, length=None) != description.get("files", {}).get(ONNX_FILE):
        raise BackboneError(f"'{graph}' is missing or differs from its recorded sha256; export the model again")
    return description


@dataclass
class OnnxScorer:
    """One exported graph in an onnxruntime session: padded waves → class probabilities."""

    folder: Path
    description: dict
    session: object

    @classmethod
    def load(cls, folder: str | Path, threads: int | None = None) -> OnnxScorer:
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise BackboneError(
                f"'{folder}' is an ONNX export; scoring it needs onnxruntime: pip install 'gmptl[onnx]'"
            ) from err
        description = read_onnx_folder(folder)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(Path(folder) / ONNX_FILE), options, providers=["CPUExecutionProvider"])
        return cls(Path(folder), description, session)

    def probs(self, waves: list[np.ndarray]) -> np.ndarray:
        """Class probabilities of each wave (one row each), scored as one zero-padded batch."""
        lengths = np.asarray([len(w) for w in waves], dtype=np.int64)
        batch = np.zeros((len(waves), int(lengths.max())), dtype=np.float32)
        for row, wave in enumerate(waves):
            batch[row, : len(wave)] = wave
        return self.session.run(["probs"], {"waves": batch, "lengths": lengths})[0]
