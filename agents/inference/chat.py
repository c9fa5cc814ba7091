"""Chat messages -> prompt text, with the template from the GGUF metadata.

The template is `tokenizer.chat_template` from the model file, rendered by llama-cpp-python's
Jinja2ChatFormatter (the same sandboxed Jinja setup Transformers uses).

Fallback (documented behaviour): a model without a chat template is prompted in ChatML
(`<|im_start|>role\\ncontent<|im_end|>\\n` ... `<|im_start|>assistant\\n`), the format most
small instruct models are trained on; `ChatTemplate.source` is then "chatml-fallback".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from agents.inference.types import ChatMessage

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

MessageLike = ChatMessage | Mapping[str, str]


def as_dicts(messages: Sequence[MessageLike]) -> list[dict[str, str]]:
    """Normalise messages; raise ValueError on anything without a role and content."""
    out: list[dict[str, str]] = []
    for i, m in enumerate(messages):
        if isinstance(m, ChatMessage):
            out.append({"role": m.role, "content": m.content})
            continue
        role, content = m.get("role"), m.get("content")
        if not isinstance(role, str) or not isinstance(content, str):
            raise ValueError(f"message {i}: needs string 'role' and 'content'")
        out.append({"role": role, "content": content})
    if not out:
        raise ValueError("a request needs at least one message")
    return out


class ChatTemplate:
    def __init__(self, template: str | None, *, bos_token: str, eos_token: str) -> None:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.source = "gguf" if template else "chatml-fallback"
        self.template = template or CHATML_TEMPLATE
        self._formatter = Jinja2ChatFormatter(
            template=self.template,
            eos_token=eos_token,
            bos_token=bos_token,
            add_generation_prompt=True,
        )

    def render(self, messages: Sequence[MessageLike]) -> str:
        """The prompt text, ending where the assistant's reply starts."""
        return self._formatter(messages=as_dicts(messages)).prompt  # type: ignore[arg-type]
