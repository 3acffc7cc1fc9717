"""A small kustomize renderer for the subset `platform/k8s` uses (kubectl is not available on these machines).

Supported fields: resources (files and directories holding a kustomization.yaml), namespace, labels (pairs, without
selectors), images, replicas, and patches given by `path` as strategic-merge patches (maps merged key by key, lists
of maps merged by `name`, any other list replaced). Anything else raises, so a new field cannot be silently ignored.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "labels", "images", "replicas", "patches"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "APIService"}


def load_documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def _key(doc: dict) -> tuple[str, str]:
    return doc["kind"], doc["metadata"]["name"]


def strategic_merge(base, patch):
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            merged[key] = strategic_merge(base[key], value) if key in base else copy.deepcopy(value)
        return merged
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(item, dict) and "name" in item for item in base + patch)
    ):
        merged = [copy.deepcopy(item) for item in base]
        index = {item["name"]: i for i, item in enumerate(merged)}
        for item in patch:
            if item["name"] in index:
                merged[index[item["name"]]] = strategic_merge(merged[index[item["name"]]], item)
            else:
                merged.append(copy.deepcopy(item))
        return merged
    return copy.deepcopy(patch)


def _pod_containers(doc: dict) -> list[dict]:
    spec = doc.get("spec", {})
    if doc["kind"] == "CronJob":
        spec = spec.get("jobTemplate", {}).get("spec", {})
    pod = spec.get("template", {}).get("spec", {})
    return pod.get("containers", []) + pod.get("initContainers", [])


def _set_image(doc: dict, image: dict) -> None:
    for container in _pod_containers(doc):
        name, _, tag = container["image"].partition(":")
        if name != image["name"]:
            continue
        new_name = image.get("newName", name)
        new_tag = str(image.get("newTag", tag))
        container["image"] = f"{new_name}:{new_tag}" if new_tag else new_name


def render(directory: Path) -> list[dict]:
    """Render the kustomization in `directory` to a list of resource documents."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))
    unknown = set(kustomization) - SUPPORTED
    if unknown:
        raise ValueError(f"{directory}: unsupported kustomization fields {sorted(unknown)}")

    docs: list[dict] = []
    for entry in kustomization.get("resources", []):
        target = (directory / entry).resolve()
        docs.extend(render(target) if target.is_dir() else load_documents(target))

    by_key = {_key(doc): i for i, doc in enumerate(docs)}
    if len(by_key) != len(docs):
        raise ValueError(f"{directory}: duplicate resources")

    for patch_entry in kustomization.get("patches", []):
        if set(patch_entry) != {"path"}:
            raise ValueError(f"{directory}: only `patches: - path: file` is supported")
        for patch in load_documents(directory / patch_entry["path"]):
            docs[by_key[_key(patch)]] = strategic_merge(docs[by_key[_key(patch)]], patch)

    for entry in kustomization.get("replicas", []):
        matches = [
            doc for doc in docs if doc["metadata"]["name"] == entry["name"] and "replicas" in doc.get("spec", {})
        ]
        if not matches:
            raise ValueError(f"{directory}: replicas for unknown {entry['name']}")
        for doc in matches:
            doc["spec"]["replicas"] = entry["count"]

    for image in kustomization.get("images", []):
        for doc in docs:
            _set_image(doc, image)

    for label_set in kustomization.get("labels", []):
        if label_set.get("includeSelectors") or label_set.get("includeTemplates"):
            raise ValueError(f"{directory}: labels with selectors/templates are not supported")
        for doc in docs:
            doc["metadata"].setdefault("labels", {}).update(label_set["pairs"])

    if "namespace" in kustomization:
        for doc in docs:
            if doc["kind"] not in CLUSTER_SCOPED:
                doc["metadata"]["namespace"] = kustomization["namespace"]
    return docs
