#!/usr/bin/env python3
"""Lint docs/openapi.yaml beyond what openapi-spec-validator checks.

A YAML flow mapping split at a comma (`{description: a, b}`) parses into a
second key with a null value instead of failing; no OpenAPI member of ours is
ever null, so any null value is reported as a mistake.
"""
import sys

import yaml


def nulls(node, path):
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}/{key}"
            if value is None:
                yield where
            else:
                yield from nulls(value, where)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from nulls(value, f"{path}/{i}")


def main(path):
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    bad = list(nulls(doc, ""))
    for where in bad:
        print(f"{path}: null value at {where} (a flow mapping split at a comma?)", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "docs/openapi.yaml"))
