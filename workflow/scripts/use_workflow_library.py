"""Imported first by every rule adapter: the job runs the gmptl library of the workflow it belongs to.

Snakemake appends the script folder to the *end* of `sys.path`, so an installed gmptl (say, an
editable install of another checkout, whose folder a .pth file puts on the path) would shadow this
workflow's own library without a word. This module puts the job's script folder (`snakemake.scriptdir`
of the running adapter) first and stops, naming both locations, if gmptl still comes from elsewhere.
"""

import sys
from pathlib import Path

_job = getattr(sys.modules["__main__"], "snakemake", None)
SCRIPTS = Path(_job.scriptdir if _job is not None else Path(__file__).parent).resolve()
if sys.path[:1] != [str(SCRIPTS)]:
    sys.path.insert(0, str(SCRIPTS))
import gmptl  # noqa: E402

if Path(gmptl.__file__).resolve().parent != SCRIPTS / "gmptl":
    raise SystemExit(
        f"this job belongs to the workflow in '{SCRIPTS.parents[1]}', but it imported the gmptl library from "
        f"'{Path(gmptl.__file__).resolve().parent}'; remove that copy from the Python path"
    )
