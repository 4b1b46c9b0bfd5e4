"""Fault cases of the "never a silent wrong context" issue, end to end on tiny models.

Each test here failed before its fix: a word, number or grapheme cluster cut at the budget
edge; NaN scores ranked as if they were attention; LlamaIndex ``Document`` nodes passed
through uncompressed; tool calls dropped from a chat history; a prompt run past the
target's position limit; unhashable or unencodable inputs failing deep inside a library; a
deprecation raised from specrag's code passing as a warning. The one exception is the guard
that our cached model calls raise no deprecation warning, which already held.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import pytest
import regex
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from specrag import CompressionResult, LoadedModel, ScoredContext, SpecPC, build_tiny_model
from specrag.core.segmentation import is_unspaced_char, tokenize_document

# ---------------------------------------------------------------------------- item 1: atomic units
# Fragments per script; the property test glues them with and without separators.
FRAGMENTS = [
    "Electrified",
    "tests.",
    "café",
    "naïve",  # precomposed
    "nai\u0308ve",  # combining diaeresis
    "Z\u0351\u0352\u0353\u0354\u0355algo",
    "e\u0301\u0302\u0303",
    "東京タワー",
    "完成した。",
    "ภาษาไทย",
    "กินข้าว",
    "العربية",
    "مَدْرَسَةٌ",  # with harakat (combining marks)
    "👩\u200d👩\u200d👧",
    "👍🏽",
    "🇯🇵🇫🇷",
    "क्षत्रिय",
    "Кестрел",
]
NUMBERS = st.one_of(
    st.integers(0, 10**12).map(str),
    st.integers(0, 9999).map(lambda n: str(n).translate(str.maketrans("0123456789", "０１２３４５６７８９"))),
    st.integers(0, 9999).map(lambda n: str(n).translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))),
    st.sampled_from(["1,234.5", "3.14159", "1\u00a0000", "10:30"]),
)
SEPARATORS = st.sampled_from([" ", " ", " ", "", "\u00a0", "\u2028", "\x0b", "\n", " \u0301", ", "])
DOCUMENT = st.lists(st.tuples(st.one_of(st.sampled_from(FRAGMENTS), NUMBERS), SEPARATORS), max_size=10).map(
    lambda parts: "".join(fragment + separator for fragment, separator in parts)
)


@pytest.fixture(scope="module")
def draft() -> LoadedModel:
    return build_tiny_model("llama")


@pytest.fixture(
    scope="module", params=[(24, "word"), (1, "word"), (24, "sentence")], ids=["cap24", "cap1", "sentences"]
)
def pc(request: pytest.FixtureRequest, draft: LoadedModel) -> SpecPC:
    """Word units with the default unit cap, and with a cap of one token, which tries to cut
    everywhere it may; and the default sentence units (groups of word units)."""
    cap, snap = request.param
    return SpecPC(
        draft, window=8, pool_kernel=4, neighbourhood=2, progress=False, max_unit_tokens=cap, snap=snap, embedder=None
    )


def graphemes(text: str) -> set[int]:
    """Positions where ``text`` may be cut without splitting a grapheme cluster: the
    ``regex`` package's ``\\X`` (UAX #29 extended grapheme clusters), used as the oracle."""
    return {match.start() for match in regex.finditer(r"\X", text)} | {len(text)}


def word_joined(text: str, position: int) -> bool:
    """Cutting before ``position`` splits a word of a spaced script or a digit run."""
    if position <= 0 or position >= len(text):
        return False
    before, char = text[position - 1], text[position]
    if before.isdigit() and char.isdigit():
        return True
    if is_unspaced_char(before) or is_unspaced_char(char):
        return False
    return before.isalnum() and char.isalnum()


def check_atomic(result: CompressionResult, scored: ScoredContext, word_units: bool = True) -> None:
    """Verbatim, cut only between whole units, never over budget, under it by less than
    the smallest unit left out."""
    left_out = []
    assert result.kept_tokens <= result.budget
    for document, doc in zip(result.documents, scored.tokenized, strict=True):
        text = document.original
        assert result.separator.join(text[start:end] for start, end in document.spans) == document.text
        if doc is None:
            continue
        cuts = graphemes(text)
        unit_starts = [int(start) for start in doc.unit_char_starts]
        unit_ends = [doc.unit_char_end(unit) for unit in range(doc.num_units)]
        previous = 0
        for start, end in document.spans:
            assert previous <= start < end <= len(text)
            previous = end
            assert start in cuts and end in cuts, (text, start, end)  # no grapheme cut
            assert not word_joined(text, start) and not word_joined(text, end), (text, start, end)
            assert any(s <= start and not text[s:start].strip() for s in unit_starts), (text, start)
            assert any(e >= end and not text[end:e].strip() for e in unit_ends), (text, end)
        for unit in range(doc.num_units):
            visible = [i for i in range(unit_starts[unit], unit_ends[unit]) if not text[i].isspace()]
            if visible and not any(s <= i < e for i in visible for s, e in document.spans):
                left_out.append(int(doc.unit_sizes[unit]))
    if left_out and word_units:  # sentence units leave less than a group unspent (test_grouping)
        assert result.budget - result.kept_tokens < min(left_out)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(documents=st.lists(DOCUMENT, min_size=1, max_size=3))
def test_every_budget_keeps_whole_units_only(pc: SpecPC, documents: list[str]) -> None:
    scored = pc.score(documents, "When was it electrified?")
    for budget in range(1, scored.total_tokens + 1):
        check_atomic(pc.select(scored, max_tokens=budget), scored, pc.settings.snap == "word")


@pytest.mark.parametrize(
    "text",
    [
        "Electrified 1923.",
        "Z\u0351\u0352\u0353\u0354\u0355algo tests.",
        "The\u00a0Kestrel\u00a0line was\x0belectrified\u2028in\u00a01923.",
        "１９５８年に完成した。",
        "กินข้าว 👩\u200d👩\u200d👧👩\u200d👩\u200d👧 مَدْرَسَةٌ",
    ],
)
def test_no_budget_cuts_a_word_number_or_cluster(pc: SpecPC, text: str) -> None:
    """Before: the leftover budget bought the leading tokens of a unit (``'Electrified 1'``,
    a bare ``'Z'``)."""
    scored = pc.score([text], "When was it electrified?")
    for budget in range(1, scored.total_tokens + 1):
        result = pc.select(scored, max_tokens=budget)
        check_atomic(result, scored, pc.settings.snap == "word")
        assert "Electrified 1" not in result.texts and "Z" not in result.texts


def test_the_cap_never_cuts_a_number_or_a_cluster(draft: LoadedModel) -> None:
    """``max_unit_tokens`` splits long runs only where no word, number or cluster joins."""
    tokenizer = draft.tokenizer
    long_number = "1234567890" * 5
    zalgo = "Z" + "\u0351\u0352\u0353\u0354\u0355" * 6
    url = "https://example.com/a/long/path/to/some/page.html"
    for text in (long_number, zalgo, "１９５８１９５８", "1\u00a0000\u00a0000", "3.14159265358979"):
        doc = tokenize_document(tokenizer, text, max_unit_tokens=1)
        assert doc.num_units == 1, text  # one unit, longer than the cap: kept whole or not at all
    doc = tokenize_document(tokenizer, url, max_unit_tokens=2)
    pieces = [url[doc.unit_char_starts[u] : doc.unit_char_end(u)] for u in range(doc.num_units)]
    assert "".join(pieces) == url and len(pieces) > 3
    assert all(not (a[-1].isalnum() and b[0].isalnum()) for a, b in zip(pieces, pieces[1:]))


# ---------------------------------------------------------------------------- item 1: NaN scores
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_draft_scores_are_an_error(value: float) -> None:
    """Before: NaN scores ranked units arbitrarily and a result came back."""
    broken = build_tiny_model("llama")
    with torch.no_grad():
        for layer in broken.model.model.layers:
            layer.self_attn.q_proj.weight.fill_(value)
    pc = SpecPC(broken, keep_ratio=0.5, window=8, progress=False)
    with pytest.raises(
        RuntimeError, match=r"^draft 'tiny-llama' gave NaN/inf .*specrag models pull tiny-llama --force$"
    ):
        pc.compress(["Kestrel Point was electrified in 1923."], "When?")


# ---------------------------------------------------------------------------- item 8: inputs
def test_a_list_as_the_metadata_query_is_one_clear_error(draft: LoadedModel) -> None:
    """Before: ``TypeError: unhashable type: 'list'`` from building a set of queries."""
    from langchain_core.documents import Document

    from specrag.langchain import SpecPCDocumentTransformer

    transformer = SpecPCDocumentTransformer(compressor=SpecPC(draft, progress=False), keep_ratio=0.5)
    documents = [
        Document(page_content="Kestrel Point was electrified in 1923.", metadata={"query": "When?"}),
        Document(page_content="The pier is older.", metadata={"query": ["When?", "Where?"]}),
    ]
    with pytest.raises(TypeError, match=r"^documents\[1\]\.metadata\['query'\] must be a str .*got list; pass query="):
        transformer.transform_documents(documents)


@pytest.mark.parametrize(
    ("call", "where"),
    [
        (lambda pc: pc.compress(["fine", "a \ud800 b"], "When?"), r"documents\[1\] .* U\+D800 at character 2"),
        (lambda pc: pc.compress(["fine"], "wh\udfffen?"), r"question .* U\+DFFF at character 2"),
        (lambda pc: pc.compress(["fine"], "When?", instruction="\ud83d"), r"instruction .* U\+D83D at character 0"),
    ],
)
def test_a_lone_surrogate_is_named_with_its_position(draft: LoadedModel, call, where: str) -> None:  # type: ignore[no-untyped-def]
    """Before: an opaque ``TypeError`` from inside the tokenizers library."""
    with pytest.raises(ValueError, match=rf"^{where}, which no tokenizer can encode; decode .*errors='replace'"):
        call(SpecPC(draft, progress=False))


# ---------------------------------------------------------------------------- item 3: LlamaIndex Document
LONG = (
    "Kestrel Point station opened in 1901 on the coastal line. The line was electrified in 1923, "
    "and the old steam shed became a museum. Fishing boats still land their catch at the pier."
)


def test_llama_index_documents_and_media_nodes_are_compressed_as_copies(draft: LoadedModel) -> None:
    """Before: a ``Document`` (no ``TextNode`` in llama-index-core 0.14) came back as the very
    same object, uncompressed and without figures."""
    from llama_index.core.schema import (
        Document,
        ImageNode,
        MediaResource,
        Node,
        NodeRelationship,
        NodeWithScore,
        RelatedNodeInfo,
        TextNode,
    )

    from specrag.llama_index import METADATA_KEY, SpecPCPostprocessor

    document = Document(
        id_="doc",
        text=LONG,
        metadata={"source": "kestrel.txt", "tags": ["rail"]},
        excluded_llm_metadata_keys=["source"],
        relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id="file")},
    )
    media = Node(
        id_="media",
        text_resource=MediaResource(text=LONG, path="kestrel.md"),
        image_resource=MediaResource(url="https://example.com/kestrel.png"),
        metadata={"kind": "page"},
    )
    captioned = ImageNode(id_="caption", image="aGVsbG8=", text=LONG, metadata={"kind": "png"})
    image_only = Node(id_="image", image_resource=MediaResource(url="https://example.com/x.png"))
    plain = TextNode(id_="text", text=LONG)
    nodes = [NodeWithScore(node=n, score=0.5) for n in (document, media, captioned, image_only, plain)]
    before = [item.model_dump() for item in nodes]
    processor = SpecPCPostprocessor(compressor=SpecPC(draft, window=8, progress=False), keep_ratio=0.3)
    query = "When was the line electrified?"
    out = processor.postprocess_nodes(nodes, query_str=query)
    assert [item.model_dump() for item in nodes] == before  # the caller's nodes are untouched
    assert [item.node.node_id for item in out if item.node.node_id == "image"] == ["image"]
    assert next(item for item in out if item.node.node_id == "image") is nodes[3]  # no text: as is
    for original in (document, media, captioned, plain):  # one call each: each keeps something
        item = next(i for i in nodes if i.node is original)
        (compressed,) = processor.postprocess_nodes([item], query_str=query)
        new = compressed.node
        assert compressed.node_id == original.node_id
        assert new is not original and type(new) is type(original)
        figures = new.metadata[METADATA_KEY]
        assert 0 < figures["kept_tokens"] < figures["original_tokens"]
        assert " … ".join(LONG[start:end] for start, end in figures["spans"]) == new.get_content()
        assert len(new.get_content()) < len(LONG)
        assert {k: v for k, v in new.metadata.items() if k != METADATA_KEY} == original.metadata
        assert new.relationships == original.relationships
        assert METADATA_KEY in new.excluded_llm_metadata_keys and METADATA_KEY in new.excluded_embed_metadata_keys
        if original is document:
            assert new.excluded_llm_metadata_keys[0] == "source"
        if original is media:
            assert isinstance(new, Node) and new.text_resource is not None
            assert str(new.text_resource.path) == "kestrel.md" and new.image_resource == media.image_resource
        if original is captioned:
            assert isinstance(new, ImageNode) and new.image == "aGVsbG8="
    assert [item.model_dump() for item in nodes] == before


# ---------------------------------------------------------------------------- item 4: tool calls
TOOL_TEMPLATE = (
    "{% for m in messages %}<{{ m.role }}>{{ m.content }}"
    "{% for c in m.tool_calls or [] %}<call>{{ c.function.name }} {{ c.function.arguments | tojson }}</call>"
    "{% endfor %}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"
)
NO_TOOLS_TEMPLATE = (
    "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)
STRICT_TEMPLATE = (
    "{% for m in messages %}{% if m.role not in ['user', 'assistant', 'system'] %}"
    "{{ raise_exception('roles must be user, assistant or system') }}{% endif %}"
    "<{{ m.role }}>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"
)
RENDERED = (
    '<user>Weather in Paris?<assistant><call>get_weather {"city": "Paris"}</call>'
    "<tool>18 C and sunny<user>Shall I take a coat?<assistant>"
)


def with_template(model: LoadedModel, template: str | None) -> LoadedModel:
    """The same network with a chat template on a copy of its tokenizer."""
    tokenizer = copy.deepcopy(model.tokenizer)
    tokenizer.chat_template = template
    return LoadedModel(model=model.model, tokenizer=tokenizer, name=f"tiny-{'tools' if template else 'plain'}")


def langchain_history() -> list[Any]:
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

    return [
        HumanMessage("Weather in Paris?"),
        AIMessage(content="", tool_calls=[{"name": "get_weather", "args": {"city": "Paris"}, "id": "call1"}]),
        ToolMessage(content="18 C and sunny", tool_call_id="call1"),
        HumanMessage("Shall I take a coat?"),
    ]


def test_chat_speckv_renders_tool_calls_and_results(draft: LoadedModel) -> None:
    """Before: the AIMessage's tool call rendered as an empty assistant turn."""
    from specrag.langchain import ChatSpecKV

    target = with_template(draft, TOOL_TEMPLATE)
    answer = ChatSpecKV(target=target, draft=None, budget=4096, max_tokens=2).invoke(langchain_history())
    assert answer.usage_metadata is not None
    assert answer.usage_metadata["input_tokens"] == len(target.tokenizer.encode(RENDERED, add_special_tokens=False))


@pytest.mark.parametrize(
    ("template", "error"),
    [
        (NO_TOOLS_TEMPLATE, r"^the chat template of target 'tiny-tools' drops the tool call or result in prompt\[1\]"),
        (STRICT_TEMPLATE, r"^the chat template of target 'tiny-tools' refuses the tool turns \(prompt\[1\]\): roles"),
        (None, r"^prompt\[1\] is a tool call or tool result, but target 'tiny-plain' has no chat template"),
    ],
)
def test_a_template_without_tool_support_refuses_tool_turns(
    draft: LoadedModel, template: str | None, error: str
) -> None:
    from specrag.langchain import ChatSpecKV

    chat = ChatSpecKV(target=with_template(draft, template), draft=None, budget=4096, max_tokens=2)
    with pytest.raises(ValueError, match=error):
        chat.invoke(langchain_history())


@pytest.mark.parametrize("form", ["block", "openai"])
def test_speckv_llm_renders_tool_calls_and_results(draft: LoadedModel, form: str) -> None:
    """Before: ``ToolCallBlock`` raised "reads text only" and OpenAI-style
    ``additional_kwargs["tool_calls"]`` rendered as an empty assistant turn."""
    from llama_index.core.base.llms.types import ChatMessage, MessageRole, ToolCallBlock

    from specrag.llama_index import SpecKVLLM

    if form == "block":
        call = ChatMessage(
            role=MessageRole.ASSISTANT,
            blocks=[ToolCallBlock(tool_call_id="call1", tool_name="get_weather", tool_kwargs={"city": "Paris"})],
        )
    else:
        openai = {
            "id": "call1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
        }
        call = ChatMessage(role=MessageRole.ASSISTANT, content="", additional_kwargs={"tool_calls": [openai]})
    messages = [
        ChatMessage(role=MessageRole.USER, content="Weather in Paris?"),
        call,
        ChatMessage(role=MessageRole.TOOL, content="18 C and sunny", additional_kwargs={"tool_call_id": "call1"}),
        ChatMessage(role=MessageRole.USER, content="Shall I take a coat?"),
    ]
    target = with_template(draft, TOOL_TEMPLATE)
    response = SpecKVLLM(target=target, draft=None, budget=4096, max_new_tokens=2).chat(messages)
    assert response.additional_kwargs["prompt_tokens"] == len(
        target.tokenizer.encode(RENDERED, add_special_tokens=False)
    )
    plain = SpecKVLLM(target=with_template(draft, NO_TOOLS_TEMPLATE), draft=None, budget=4096, max_new_tokens=2)
    with pytest.raises(ValueError, match=r"drops the tool call or result in prompt\[1\]"):
        plain.chat(messages)


# ---------------------------------------------------------------------------- item 5: position limit
def test_speckv_refuses_a_prompt_past_the_targets_position_limit(draft: LoadedModel) -> None:
    """Before: a 721-token prompt on a 256-position target generated without a word."""
    from specrag import SpecKV

    short = build_tiny_model("llama", max_position_embeddings=256)
    engine = SpecKV(short, draft, budget=64, window=8)
    prompt = "The capital of France is Paris and the river Seine flows through it. " * 40
    length = len(engine.render(prompt))
    assert length > 256
    with pytest.raises(
        ValueError,
        match=rf"^the prompt is {length} tokens plus max_new_tokens=8 and 8 draft lookahead tokens: target "
        rf"'tiny-llama' would need {length + 8} positions but reads at most 256; shorten the prompt, compress the "
        r"documents \(compressor=SpecPC\(\.\.\.\)\) or lower max_new_tokens$",
    ):
        engine.generate(prompt, max_new_tokens=8)
    fits = next(p for p in ("Paris is big. " * n for n in range(1, 99)) if len(engine.render(p)) > 248)
    room = 256 - len(engine.render(fits))
    assert 0 < room < 12
    assert engine.generate(fits, max_new_tokens=room).finish_reason in ("length", "eos")  # exactly at the limit
    with pytest.raises(ValueError, match=r"would need 257 positions but reads at most 256"):
        engine.generate(fits, max_new_tokens=room + 1)


def test_speckv_refuses_a_prompt_past_the_drafts_position_limit() -> None:
    from specrag import SpecKV

    engine = SpecKV(
        build_tiny_model("llama"), build_tiny_model("llama", max_position_embeddings=64), budget=16, window=4
    )
    with pytest.raises(
        ValueError,
        match=r"draft 'tiny-llama' would need .* reads at most 64; .* or the policy's lookahead, "
        r"or load a draft that reads more positions$",
    ):
        engine.generate("The capital of France is Paris. " * 20, max_new_tokens=4)


# ---------------------------------------------------------------------------- item 12: warnings
def warn_from(module: str, category: type[Warning]) -> None:
    """Raise ``category`` from code whose module is ``module`` (what warnings filters see)."""
    code = compile("import warnings\nwarnings.warn('soon removed', category)\n", f"<{module}>", "exec")
    exec(code, {"__name__": module, "category": category})


@pytest.mark.parametrize("category", [DeprecationWarning, FutureWarning])
def test_a_deprecation_from_specrag_code_fails_the_run(category: type[Warning]) -> None:
    """pyproject's filterwarnings: an error when attributed to specrag, a warning otherwise."""
    for module in ("specrag", "specrag.core.models"):
        with pytest.raises(category, match="soon removed"):
            warn_from(module, category)
    for module in ("transformers.modeling_utils", "specrag_lookalike"):
        with pytest.warns(category, match="soon removed"):
            warn_from(module, category)


def test_our_model_calls_raise_no_deprecation_warning(draft: LoadedModel) -> None:
    """transformers attributes a deprecated forward argument (``past_key_values`` before
    ``cache``) to torch's module wrapper, not to our call, so the module-scoped filter cannot
    see it; the cached paths of SpecPC (lookahead) and SpecKV (draft answer, decoding) are
    therefore run here with every deprecation an error."""
    from specrag import SpecKV

    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        warnings.simplefilter("error", FutureWarning)
        SpecPC(draft, lookahead=3, window=4, progress=False).compress([LONG], "When?")
        SpecKV(draft, draft, budget=16, window=4).generate(LONG, max_new_tokens=3)
