"""What the README and the model card tell users to run stays loadable: every load of a HuLlama folder or repo
through an auto class passes trust_remote_code=True (without it transformers stops at the remote-code prompt, the
tokenizer too, since it reads the folder's config.json)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
AUTO_LOAD = re.compile(r"\b(Auto\w+)\.from_pretrained\((.*)\)")


@pytest.mark.parametrize("document", ["README.md", "hub_card/template.md"])
def test_every_auto_class_load_of_a_hullama_passes_trust_remote_code(document):
    loads = [(number, line) for number, line in enumerate((ROOT / document).read_text().splitlines(), 1)
             if AUTO_LOAD.search(line)]
    assert loads, f"{document} shows no load: the test reads the wrong file"
    missing = [f"{document}:{number}: {line.strip()}" for number, line in loads if "trust_remote_code=True" not in line]
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("document", ["README.md", "hub_card/template.md"])
def test_the_tested_transformers_range_is_stated(document):
    from configuration_hullama import TRANSFORMERS_RANGE

    text = (ROOT / document).read_text()
    assert TRANSFORMERS_RANGE in text or "{{ transformers_range }}" in text


def test_a_rendered_card_states_the_range_and_trusts_remote_code_in_every_load():
    from configuration_hullama import TRANSFORMERS_RANGE
    from hullama.hub_card.card import render_card

    for adapter in (False, True):
        text = str(render_card(repo_id="me/hullama-test", base_model="me/hullama-base", adapter=adapter))
        assert f"transformers{TRANSFORMERS_RANGE}" in text
        loads = [line for line in text.splitlines() if AUTO_LOAD.search(line)]
        assert loads and all("trust_remote_code=True" in line for line in loads), loads
