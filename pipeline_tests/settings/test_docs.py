"""The configuration tables of docs/OPERATIONS.md are generated from the settings' definitions."""

from pipeline.settings import all_specs
from pipeline.settings.docs import OPERATIONS, rendered


def test_the_configuration_tables_in_the_docs_are_generated_from_the_definitions():
    document = OPERATIONS.read_text()
    assert "<!-- settings: all -->" in document and "<!-- settings: bigquery -->" in document
    assert document == rendered(document), "regenerate them: python -m pipeline.settings --write-docs"
    for _, spec in all_specs():
        assert f"| `{spec.variable}` |" in document, spec.variable
