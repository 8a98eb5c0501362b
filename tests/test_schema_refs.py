"""Every `$ref` of the generated OpenAPI schema resolves. Neither drf-spectacular's `--validate`
nor `openapi-spec-validator` notices a reference to a component that is not there (a hand-written
`{"$ref": ...}` in `extend_schema`), and a client generator then fails on the schema."""

from __future__ import annotations

import pytest
import yaml


def refs(node, path="#"):
    """(where, target) of every `$ref` in a JSON document."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield path, value
            else:
                yield from refs(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from refs(value, f"{path}/{index}")


def resolve(document: dict, ref: str):
    """The node a local JSON pointer (`#/components/schemas/X`) names; KeyError if none."""
    if not ref.startswith("#/"):
        raise KeyError(f"not a local reference: {ref}")
    node = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, list):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise KeyError(ref)
    return node


def unresolved(document: dict) -> list[str]:
    missing = []
    for where, ref in refs(document):
        try:
            resolve(document, ref)
        except (KeyError, IndexError, ValueError):
            missing.append(f"{where}: {ref}")
    return missing


def test_the_checker_finds_a_dangling_ref():
    document = {
        "paths": {"/a": {"post": {"requestBody": {"$ref": "#/components/schemas/Missing"}}}},
        "components": {"schemas": {"There": {"type": "object"}}},
        "x": [{"$ref": "#/components/schemas/There"}, {"$ref": "other.yaml#/X"}],
    }
    assert unresolved(document) == [
        "#/paths//a/post/requestBody: #/components/schemas/Missing",
        "#/x/1: other.yaml#/X",
    ]


@pytest.mark.django_db
def test_every_ref_of_the_api_schema_resolves(client):
    response = client.get("/api/v1/schema/")
    assert response.status_code == 200
    document = yaml.safe_load(response.content)
    found = list(refs(document))
    assert len(found) > 100  # the walk reaches the references
    assert unresolved(document) == []
    usage = document["paths"]["/api/v1/credits/usage"]["post"]["requestBody"]
    assert "UsageRecordInputRequest" in str(usage)
    one_of = document["components"]["schemas"]["UsageRecordInputRequest"]["oneOf"]
    assert {r["$ref"].rsplit("/", 1)[1] for r in one_of} == {
        "UsageEventInputRequest",
        "UsageBatchInputRequest",
    }
