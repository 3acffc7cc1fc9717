"""Loading a downloaded artifact with the server's trust rules (registry/artifacts.py):

- skops: only the types skops trusts by default plus SKOPS_ALLOWED_TYPES (the same list as the server's) plus any
  the caller names, and the archive's unpacked size bounded;
- ONNX: through onnxruntime when installed, refusing tensors stored in external files;
- pickle/joblib: refused unless the caller passes trust_pickle=True (a pickle runs code when loaded).
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Iterable
from typing import Any

from modelworks_client.errors import ModelworksError, UntrustedArtifact

ZIP_MAGIC = b"PK\x03\x04"
DEFAULT_UNPACKED_LIMIT = 2048 * 2**20  # the server's default is configurable; the client is the model's owner

# Mirrors registry.artifacts.SKOPS_ALLOWED_TYPES: scikit-learn internals holding arrays, no code.
SKOPS_ALLOWED_TYPES = frozenset(
    {
        "sklearn.tree._tree.Tree",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn._loss.link.IdentityLink",
        "sklearn._loss.link.LogitLink",
        "sklearn._loss.link.MultinomialLogit",
        "sklearn._loss.loss.HalfBinomialLoss",
        "sklearn._loss.loss.HalfMultinomialLoss",
        "sklearn._loss.loss.HalfSquaredError",
        "sklearn._loss.loss.AbsoluteError",
        "numpy.dtype",
    }
)


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def looks_like_pickle(data: bytes) -> bool:
    return len(data) >= 2 and data[0] == 0x80 and data[1] <= 5


def load_artifact(
    data: bytes,
    fmt: str,
    *,
    trust_pickle: bool = False,
    trusted_types: Iterable[str] = (),
    unpacked_limit: int = DEFAULT_UNPACKED_LIMIT,
) -> Any:
    """The model in `data` (format skops, onnx or joblib), or UntrustedArtifact / ModelworksError saying why not."""
    if not data:
        raise ModelworksError("the artifact is empty")
    if fmt == "skops":
        return _load_skops(data, SKOPS_ALLOWED_TYPES | frozenset(trusted_types), unpacked_limit)
    if fmt == "onnx":
        return _load_onnx(data)
    if fmt == "joblib":
        if not trust_pickle:
            raise UntrustedArtifact(
                "pickle-based artifacts (joblib) can run code when loaded and are refused; "
                "pass trust_pickle=True only if you trust whoever uploaded it"
            )
        import joblib

        return joblib.load(io.BytesIO(data))  # noqa: S301 - trusted explicitly by the caller
    raise ModelworksError(f"unknown artifact format {fmt!r}: expected skops, onnx or joblib")


def _load_skops(data: bytes, allowed: frozenset[str], unpacked_limit: int) -> Any:
    try:
        import skops.io as sio
    except ImportError:
        raise ModelworksError("skops artifacts need skops: pip install skops") from None
    if looks_like_pickle(data) or not data.startswith(ZIP_MAGIC):
        raise UntrustedArtifact("not a skops archive (expected a zip file)")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            unpacked = sum(member.file_size for member in archive.infolist())
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise ModelworksError(f"the skops archive is damaged or truncated: {exc}") from None
    if unpacked > unpacked_limit:
        raise UntrustedArtifact(f"the skops archive unpacks to {unpacked:,} bytes; the limit is {unpacked_limit:,}")
    untrusted = set(sio.get_untrusted_types(data=data))
    refused = sorted(untrusted - allowed)
    if refused:
        raise UntrustedArtifact(
            "the skops archive holds types that are not trusted: " + ", ".join(refused) + " (pass trusted_types=[...])"
        )
    return sio.loads(data, trusted=sorted(untrusted))


def _load_onnx(data: bytes) -> Any:
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise ModelworksError("ONNX artifacts need onnx and onnxruntime: pip install onnx onnxruntime") from None
    proto = onnx.ModelProto()
    proto.ParseFromString(data)
    external = [t.name for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise UntrustedArtifact("ONNX models with external data are refused: " + ", ".join(external[:5]))
    return onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
