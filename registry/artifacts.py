"""Reading model artifacts safely: skops with an explicit allow-list, ONNX through onnxruntime, pickle only if trusted.

Nothing in here touches the database or storage; it turns bytes into a model or a readable reason why not.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from typing import Any

import numpy as np
from django.conf import settings

from registry import onnx_tools
from registry.models import ArtifactFormat

ZIP_MAGIC = b"PK\x03\x04"
MAX_ARCHIVE_MEMBERS = 100_000  # skops writes one file per array: even a large forest has a few hundred
PICKLE_PROTOCOL_MARK = 0x80

# Types skops does not trust by default but that are plain scikit-learn internals holding arrays, no code.
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


class ArtifactError(Exception):
    """The artifact cannot be accepted or loaded; the message says why in one line."""


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def looks_like_pickle(data: bytes) -> bool:
    return len(data) >= 2 and data[0] == PICKLE_PROTOCOL_MARK and data[1] <= 5


def detect_format(data: bytes, filename: str = "") -> str:
    """The format from the file name, else from its first bytes."""
    name = filename.lower()
    for suffix, fmt in ((".skops", ArtifactFormat.SKOPS), (".onnx", ArtifactFormat.ONNX)):
        if name.endswith(suffix):
            return fmt
    if name.endswith((".joblib", ".pkl", ".pickle")) or looks_like_pickle(data):
        return ArtifactFormat.JOBLIB
    if data.startswith(ZIP_MAGIC):
        return ArtifactFormat.SKOPS
    raise ArtifactError("unknown artifact format: give format=skops|onnx|joblib or a .skops/.onnx/.joblib file")


def load_model(data: bytes, fmt: str) -> Any:
    if not data:
        raise ArtifactError("the artifact is empty")
    if fmt == ArtifactFormat.SKOPS:
        return _load_skops(data)
    if fmt == ArtifactFormat.ONNX:
        return _load_onnx(data)
    if fmt == ArtifactFormat.JOBLIB:
        return _load_pickle(data)
    raise ArtifactError(f"unknown artifact format {fmt!r}: use skops, onnx or joblib")


def vet_untrusted(data: bytes, fmt: str) -> None:
    """Load an uploaded artifact once in a worker process with memory and time limits (registry.sandbox), so that a
    hostile file costs that process and not the web worker; raise ArtifactError with the reason it was refused.
    Pickles are not vetted: they run code anyway and are loaded only when the deployment trusts every uploader."""
    if fmt not in (ArtifactFormat.SKOPS, ArtifactFormat.ONNX):
        return
    if fmt == ArtifactFormat.SKOPS and data.startswith(ZIP_MAGIC):
        _check_unpacked_size(data, _unpacked_limit_bytes())  # cheap and certain: no worker needed to refuse a bomb
    from registry import sandbox

    limits = sandbox.Limits(
        memory_mb=int(settings.MODELWORKS_ARTIFACT_CHECK_MEMORY_MB),
        seconds=float(settings.MODELWORKS_ARTIFACT_CHECK_SECONDS),
        skops_allowed_types=_skops_allowed_types(),
        unpacked_bytes=_unpacked_limit_bytes(),
    )
    try:
        sandbox.check(data, fmt, limits)
    except sandbox.SandboxRefusal as exc:
        raise ArtifactError(str(exc)) from None


def load_untrusted(data: bytes, fmt: str, *, allowed_types: frozenset[str], unpacked_bytes: int) -> Any:
    """load_model with the limits given rather than read from settings: what registry.sandbox's worker runs."""
    if fmt == ArtifactFormat.SKOPS:
        return _load_skops_with(data, allowed_types, unpacked_bytes)
    return load_model(data, fmt)


def _skops_allowed_types() -> frozenset[str]:
    return SKOPS_ALLOWED_TYPES | frozenset(settings.MODELWORKS_SKOPS_TRUSTED_TYPES)


def _unpacked_limit_bytes() -> int:
    return int(settings.MODELWORKS_MAX_ARTIFACT_UNPACKED_MB) * 2**20


def _check_unpacked_size(data: bytes, limit: int) -> None:
    """Refuse an archive whose members declare more bytes than `limit` in all (zipfile never inflates a member past
    its declared size, so this bounds what loading can unpack)."""
    # Each member has a central-directory entry starting with this signature: an upper bound on the member count,
    # found without building a ZipInfo per entry (a file of millions of empty entries would cost gigabytes).
    if data.count(b"PK\x01\x02") > MAX_ARCHIVE_MEMBERS:
        raise ArtifactError(f"the skops archive holds more than {MAX_ARCHIVE_MEMBERS:,} files")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise ArtifactError(f"the skops archive is damaged or truncated: {exc}") from None
    total = sum(member.file_size for member in members)
    if total > limit:
        raise ArtifactError(
            f"the skops archive unpacks to {total:,} bytes from {len(data):,} ({len(members)} files); the limit is "
            f"{limit // 2**20} MB unpacked (MODELWORKS_MAX_ARTIFACT_UNPACKED_MB)"
        )


def _load_skops(data: bytes) -> Any:
    return _load_skops_with(data, _skops_allowed_types(), _unpacked_limit_bytes())


def _load_skops_with(data: bytes, allowed: frozenset[str], unpacked_bytes: int) -> Any:
    import skops.io as sio

    if looks_like_pickle(data):
        raise ArtifactError("this file is a pickle, not a skops archive")
    if not data.startswith(ZIP_MAGIC):
        raise ArtifactError("not a skops archive (expected a zip file)")
    _check_unpacked_size(data, unpacked_bytes)
    try:
        untrusted = set(sio.get_untrusted_types(data=data))
    except MemoryError:
        raise
    except Exception as exc:  # skops raises zipfile/json/key errors on damaged files
        raise ArtifactError(f"the skops archive is damaged or truncated: {exc}") from None
    refused = sorted(untrusted - allowed)
    if refused:
        raise ArtifactError(
            "the skops archive holds types that are not trusted: "
            + ", ".join(refused)
            + " (a deployment can trust more with MODELWORKS_SKOPS_TRUSTED_TYPES)"
        )
    try:
        return sio.loads(data, trusted=sorted(untrusted))
    except MemoryError:
        raise
    except Exception as exc:
        raise ArtifactError(f"the skops archive could not be loaded: {exc}") from None


def _load_pickle(data: bytes) -> Any:
    if not settings.MODELWORKS_TRUST_PICKLE:
        raise ArtifactError(
            "pickle-based artifacts (joblib) can run code when loaded and are refused; "
            "upload a skops file, or set MODELWORKS_TRUST_PICKLE=1 if every uploader is trusted"
        )
    import joblib

    try:
        return joblib.load(io.BytesIO(data))  # noqa: S301 - trusted explicitly by the deployment
    except Exception as exc:
        raise ArtifactError(f"the joblib file could not be loaded: {exc}") from None


def _load_onnx(data: bytes) -> Any:
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise ArtifactError("ONNX artifacts need onnx and onnxruntime: pip install 'modelworks[onnx]'") from None
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as exc:  # protobuf's DecodeError, or a RuntimeWarning-turned-error on odd bytes
        raise ArtifactError(f"not an ONNX model: {exc}") from None
    external = external_data_tensors(model)
    if external:
        # onnxruntime would read these from the file system (relative to the working directory for a model given as
        # bytes): a model could return any file the web process can read as its predictions.
        raise ArtifactError(
            "ONNX models with external data are refused (tensors stored in files: "
            + ", ".join(external[:5])
            + "); save the model with all tensors inside the .onnx file"
        )
    try:
        session = onnxruntime.InferenceSession(data, providers=onnx_tools.providers())
    except Exception as exc:
        raise ArtifactError(f"the ONNX model could not be loaded: {exc}") from None
    return OnnxModel(session)


def external_data_tensors(model: Any) -> list[str]:
    """The names of tensors anywhere in an onnx.ModelProto (initializers, Constant and other node attributes,
    subgraphs, functions, training graphs) whose data lives outside the model, in a file."""
    from onnx import TensorProto

    found: list[str] = []

    def tensor(t: Any) -> None:
        if t.data_location == TensorProto.EXTERNAL or len(t.external_data):
            found.append(t.name or "(unnamed)")

    def sparse(st: Any) -> None:
        tensor(st.values)
        tensor(st.indices)

    def nodes(node_list: Any) -> None:
        for node in node_list:
            for attr in node.attribute:
                if attr.HasField("t"):
                    tensor(attr.t)
                if attr.HasField("sparse_tensor"):
                    sparse(attr.sparse_tensor)
                if attr.HasField("g"):
                    graph(attr.g)
                for t in attr.tensors:
                    tensor(t)
                for st in attr.sparse_tensors:
                    sparse(st)
                for g in attr.graphs:
                    graph(g)

    def graph(g: Any) -> None:
        for t in g.initializer:
            tensor(t)
        for st in g.sparse_initializer:
            sparse(st)
        nodes(g.node)

    graph(model.graph)
    for function in model.functions:
        nodes(function.node)
    for training in model.training_info:
        graph(training.initialization)
        graph(training.algorithm)
    return found


class OnnxModel:
    """An onnxruntime session behind scikit-learn's predict/predict_proba interface.

    Expects what skl2onnx produces: one float input tensor (rows x features), a label output and, for
    classifiers, a probability output (a tensor, or ZipMap's list of {class: probability}).
    """

    def __init__(self, session: Any) -> None:
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise ArtifactError("ONNX models must take exactly one input tensor (rows x features)")
        self._session = session
        self._input = inputs[0].name
        shape = inputs[0].shape
        self.n_features_in_ = shape[1] if len(shape) == 2 and isinstance(shape[1], int) else None
        outputs = session.get_outputs()
        self._label = outputs[0].name
        self._proba = outputs[1].name if len(outputs) > 1 else None
        if self._proba is not None and self.n_features_in_:
            probs = self._run(self._proba, np.zeros((1, self.n_features_in_)))
            if isinstance(probs, list) and probs and isinstance(probs[0], dict):
                self.classes_ = np.array(list(probs[0].keys()))

    @property
    def providers(self) -> list[str]:
        """The execution providers this session runs on, in order of preference."""
        return list(self._session.get_providers())

    @property
    def is_classifier(self) -> bool:
        return self._proba is not None

    def _run(self, output: str, X: Any) -> Any:
        return self._session.run([output], {self._input: np.asarray(X, dtype=np.float32)})[0]

    def predict(self, X: Any) -> np.ndarray:
        return np.asarray(self._run(self._label, X)).ravel()

    def predict_with_proba(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """Labels and probabilities from one run of the graph (it computes both anyway)."""
        labels, probs = self._session.run([self._label, self._proba], {self._input: np.asarray(X, dtype=np.float32)})
        return np.asarray(labels).ravel(), self._probabilities(probs)

    def predict_proba(self, X: Any) -> np.ndarray:
        if self._proba is None:
            raise AttributeError("this ONNX model has no probability output")
        return self._probabilities(self._run(self._proba, X))

    @staticmethod
    def _probabilities(probs: Any) -> np.ndarray:
        if isinstance(probs, list):
            return np.array([list(row.values()) for row in probs], dtype=float)
        return np.asarray(probs, dtype=float)


def recorded_library_versions(data: bytes, fmt: str) -> dict[str, str]:
    """The library versions an artifact records about the environment that saved it (skops archives only)."""
    if fmt != ArtifactFormat.SKOPS:
        return {}
    import json

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            schema = json.loads(archive.read("schema.json"))
    except (zipfile.BadZipFile, KeyError, ValueError):
        return {}
    versions = {"skops": str(schema.get("_skops_version", ""))}
    state = schema.get("content", {}).get("content", {})
    sklearn_version = state.get("_sklearn_version", {}).get("content") if isinstance(state, dict) else None
    if isinstance(sklearn_version, str):
        versions["scikit-learn"] = sklearn_version.strip('"')
    return {name: version for name, version in versions.items() if version}
