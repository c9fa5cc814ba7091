"""Prompt building pieces that need no model: chat templates, message checks, schema grammars."""

from __future__ import annotations

import pytest

from agents.inference.chat import ChatTemplate, as_dicts
from agents.inference.grammar import schema_to_gbnf
from agents.inference.types import ChatMessage


def test_a_model_without_a_template_gets_chatml() -> None:
    tpl = ChatTemplate(None, bos_token="<s>", eos_token="</s>")
    assert tpl.source == "chatml-fallback"
    prompt = tpl.render([ChatMessage("system", "Be brief."), {"role": "user", "content": "Hi"}])
    assert prompt == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_the_gguf_template_is_used_when_present() -> None:
    template = "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    tpl = ChatTemplate(template, bos_token="<s>", eos_token="</s>")
    assert tpl.source == "gguf"
    assert tpl.render([{"role": "user", "content": "x"}]) == "<s>[user] x\n"


def test_messages_need_a_role_and_content() -> None:
    assert as_dicts([ChatMessage("user", "a")]) == [{"role": "user", "content": "a"}]
    with pytest.raises(ValueError, match="at least one"):
        as_dicts([])
    with pytest.raises(ValueError, match="message 1"):
        as_dicts([{"role": "user", "content": "a"}, {"role": "user"}])


def test_schema_grammar_keeps_property_order_and_rejects_nonsense() -> None:
    gbnf = schema_to_gbnf(
        {
            "type": "object",
            "properties": {"zeta": {"type": "integer"}, "alpha": {"type": "boolean"}},
            "required": ["zeta", "alpha"],
        }
    )
    root = next(line for line in gbnf.splitlines() if line.startswith("root ::="))
    assert root.index("zeta-kv") < root.index("alpha-kv")  # written in the schema's order
    with pytest.raises(ValueError, match="grammar"):
        schema_to_gbnf({"type": "no-such-type"})
