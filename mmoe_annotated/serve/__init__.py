"""Serving: a trained model exported with parity, and a scoring service a client can call.

Explained in the appendix "Serving the ranker" (``book/appendix_serving.ipynb``).

==============  ======================================================================
module          what
==============  ======================================================================
``manifest``    the export folder's format: every file's SHA-256, atomic writes, verification
``export``      ``mm.export``: the model as ONNX or a ``torch.export`` program, the encoder beside it
``load``        an export verified and run by onnxruntime or torch; raw rows scored
``rows``        a request's JSON checked field by field, every problem named
``service``     the Starlette app: ``POST /score``, ``GET /health``, ``GET /metadata``
``__main__``    ``python -m mmoe_annotated.serve --model PATH``: the app under uvicorn
``process``     the service as a child process on a free loopback port, stopped cleanly
==============  ======================================================================

The stage imports the taught stages (features, model, train's conventions, checkpoint's file
helpers), never the fast wing. ONNX export needs ``onnx`` and ``onnxscript``, running it
``onnxruntime``, the service ``starlette`` and ``uvicorn`` (and a client, ``httpx``, to call it): ``pip install
'mmoe-annotated[serve]'``. Importing this stage needs none of them; each is imported where it is
used.
"""
from .manifest import FORMAT, FORMAT_VERSION, ExportError
from .export import FORMATS, Scorer, export
from .load import Exported, from_checkpoint, load_export
from .process import ServiceProcess

__all__ = ["export", "load_export", "from_checkpoint", "Exported", "ExportError", "Scorer", "ServiceProcess", "FORMATS",
           "FORMAT", "FORMAT_VERSION"]
