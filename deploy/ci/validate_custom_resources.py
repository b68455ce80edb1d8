#!/usr/bin/env python3
"""Validates custom resources against the CRDs that define them, offline.

kubernetes-validate knows the built-in kinds only; this checks every object whose group and kind
match a CustomResourceDefinition (found in the given files and in --crd files) against that CRD's
openAPIV3Schema, strictly: unknown fields are errors (the API server would silently prune them).

Usage: validate_custom_resources.py [--crd CRD.yaml]... MANIFEST.yaml...
Prints one line per object: OK, SKIP (built-in kind, or no CRD here), or ERROR; exits 1 on any
ERROR. Needs PyYAML and jsonschema (both come with kubernetes-validate).
"""

import argparse
import copy
import sys

import jsonschema
import yaml


def strict(schema):
    """openAPIV3Schema -> JSON Schema: nullable, and no unknown fields unless preserved."""
    s = copy.deepcopy(schema)
    for key in [k for k in s if k.startswith("x-kubernetes-") and k != "x-kubernetes-preserve-unknown-fields"]:
        del s[key]
    if s.pop("nullable", False) and "type" in s:
        s["type"] = [s["type"], "null"]
    preserve = s.pop("x-kubernetes-preserve-unknown-fields", False)
    if "properties" in s:
        s["properties"] = {k: strict(v) for k, v in s["properties"].items()}
        if not preserve and "additionalProperties" not in s:
            s["additionalProperties"] = False
    if isinstance(s.get("items"), dict):
        s["items"] = strict(s["items"])
    if isinstance(s.get("additionalProperties"), dict):
        s["additionalProperties"] = strict(s["additionalProperties"])
    return s


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--crd", action="append", default=[])
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    docs = [(p, d) for p in args.files for d in load(p)]
    crds = [d for p in args.crd for d in load(p)] + [d for _, d in docs]
    schemas = {}
    for c in crds:
        if c.get("kind") != "CustomResourceDefinition":
            continue
        spec = c["spec"]
        for v in spec["versions"]:
            key = (spec["group"] + "/" + v["name"], spec["names"]["kind"])
            schemas[key] = strict(v["schema"]["openAPIV3Schema"])
    failed = False
    for path, d in docs:
        api, kind = d.get("apiVersion", ""), d.get("kind", "")
        name = (d.get("metadata") or {}).get("name", "?")
        schema = schemas.get((api, kind))
        if schema is None:
            print("SKIP %s %s %s/%s: no CRD here" % (path, api, kind, name))
            continue
        errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(d), key=lambda e: list(e.path))
        if errors:
            failed = True
            for e in errors:
                where = ".".join(str(p) for p in e.path) or "(root)"
                print("ERROR %s %s %s/%s: %s: %s" % (path, api, kind, name, where, e.message))
        else:
            print("OK %s %s %s/%s" % (path, api, kind, name))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
