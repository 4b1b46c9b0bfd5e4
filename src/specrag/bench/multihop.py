"""Multi-hop questions: the second fact shares no entity with the question.

Why this family
---------------
A sentence filter ranks text by its similarity to the question, so it finds the first fact
("Mara Voss ... was born in Kestrel Point") but has no reason to keep the second ("Kestrel
Point lies on the river Wendle"): nothing in the question names Kestrel Point. A compressor
that reads the context as a language model does can follow the bridge. Confusers carry the
same relations for other people and other places, so keeping "some river sentence" is not
enough: only the bridged one answers.

Every item is built from a seed with invented names (no model can answer from memory, no
download). Facts are stated in one of two ways, recorded as ``meta["qtype"]``:

- ``"lexical"``: the fact sentence names its subject ("Mara Voss was born in Kestrel Point.");
- ``"coref"``: it refers back ("She was born in Kestrel Point.", "The town lies on ...").

``answers`` is the final answer (what the target must say); ``evidence`` the two phrases that
must both survive compression for the answer to be derivable from the kept text.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from .needle import Tokenizer

_FIRST = (
    "Mara", "Tobin", "Ilse", "Corwin", "Anouk", "Bram", "Odile", "Fenwick", "Liesel", "Dario", "Signe", "Emrys",
    "Tamsin", "Oswin", "Rhiannon", "Caspar", "Ysolde", "Leander", "Marit", "Joost", "Elowen", "Anselm", "Brisa",
    "Torvald", "Neve", "Ulric", "Saoirse", "Matthias", "Zofia", "Quillon",
)  # fmt: skip
_LAST = (
    "Voss", "Ardley", "Quenby", "Halloran", "Merrow", "Ostrander", "Pellham", "Castellane", "Drummore", "Fairclough",
    "Ingleby", "Kestrell", "Lunden", "Marchbank", "Nettleford", "Orrin", "Penhallow", "Rathbone", "Stavely",
    "Tregarth", "Underhay", "Wolcott", "Yarrow", "Abernathy", "Blackwood", "Carrow", "Denholm", "Elsworth",
)  # fmt: skip
_PROFESSIONS = (
    "botanist", "cartographer", "violin maker", "structural engineer", "archivist", "glassblower", "surveyor",
    "translator", "beekeeper", "clockmaker", "geologist", "ferry pilot", "stonemason", "librarian",
)  # fmt: skip
_HOBBIES = (
    "spends her weekends restoring old bicycles",
    "collects maps of coastlines that no longer exist",
    "has run every marathon in the northern league",
    "keeps a notebook of the birds seen from the kitchen window",
    "teaches chess to children on Saturday mornings",
    "once walked the length of the coast path in a single summer",
    "grows rare tomatoes in a glasshouse behind the house",
    "sings in a choir that performs twice a year",
    "repairs radios for neighbours without charging",
    "has published two short books of local walks",
)
_SIZES = ("small", "quiet", "busy", "old", "hilly", "windswept", "prosperous")
_SCENES = (
    "Its market square is lined with slate-roofed houses",
    "A stone bridge from the sixteenth century crosses its centre",
    "Visitors come for the autumn fair and the cider mills",
    "Most of its people once worked in the quarries nearby",
    "It has a railway station on the line to the coast",
    "A lighthouse stands on the headland to its west",
)
_PLACE_A = ("Kest", "Brann", "Wyn", "Thorn", "Ash", "Marl", "Holt", "Fen", "Stave", "Rook", "Cald", "Brae")
_PLACE_B = ("ford", "wick", "mere", "by", "stow", "ham", "ley", "wold", "haven", "combe")
_RIVER_A = ("Wen", "Sor", "Au", "Lis", "Tar", "Quel", "Myr", "Is", "Van", "Or", "Skir", "Hal")
_RIVER_B = ("dle", "row", "ber", "sel", "ran", "try", "now", "me", "ith", "wen")
_COMPANY_A = ("Halcyon", "Meridian", "Copperleaf", "Northwind", "Bluestone", "Larkspur", "Ironvale", "Silverbirch")
_COMPANY_B = ("Instruments", "Textiles", "Optics", "Freight", "Ceramics", "Robotics", "Press", "Seeds")
_CITY_A = ("Port", "New", "Upper", "Saint", "East", "Old")
_CITY_B = ("Anselm", "Velmora", "Grisham", "Tollan", "Ostrava", "Kirrin", "Lowmarsh", "Idris", "Velia", "Corrin")
_COLLEGE_A = ("Aldric", "Merrow", "Quenby", "Harrowgate", "Lantern", "Elmsworth", "Northgate", "Castor", "Wexley",
              "Pellinore")  # fmt: skip
_COLLEGE_B = ("College", "Hall", "Institute", "Academy", "Conservatory")
_HORSE_A = ("Silver", "Thunder", "Quiet", "Red", "Northern", "Copper", "Midnight", "Gilded", "Blue", "Wild")
_HORSE_B = ("Lark", "Moth", "Ember", "Bramble", "Jest", "Wren", "Tarn", "Heron", "Spindle", "Thimble")
_RACE_A = ("Harrow", "Autumn", "Greywater", "Kings", "Lantern", "Fenland", "Coastal", "Meridian", "Winter", "Ashby")
_RACE_B = ("Cup", "Plate", "Stakes", "Mile", "Derby", "Trophy", "Classic", "Chase")
_ASIDES = (
    "{Pronoun} lives with two cats and a great many books.",
    "Friends describe {pronoun_obj} as patient and very hard to surprise.",
    "{Pronoun} rarely gives interviews and prefers letters to telephone calls.",
    "Last year {pronoun} gave a talk at the regional museum.",
    "{Pronoun} is learning to play the cello, slowly.",
    "Colleagues say {pronoun} keeps the tidiest workshop in the county.",
    "{Pronoun} writes a short column for the local newspaper.",
    "On most mornings {pronoun} swims in the harbour before work.",
)


@dataclass(frozen=True)
class _Relation:
    """One two-hop chain: person -hop1-> bridge -hop2-> answer."""

    name: str
    question: str
    hop1: tuple[str, str]  # lexical, coref sentence templates: {person} {pronoun} {bridge}
    hop2: tuple[str, str]  # lexical, coref: {bridge} {answer} {kind}
    evidence1: str
    evidence2: str


_RELATIONS = (
    _Relation(
        "born_in",
        "Which river flows through the town where {person} was born?",
        ("{person} was born in {bridge}.", "{Pronoun} was born in {bridge}."),
        ("{bridge} lies on the river {answer}.", "The town lies on the river {answer}."),
        "born in {bridge}",
        "river {answer}",
    ),
    _Relation(
        "works_for",
        "In which city is the company that {person} works for based?",
        ("{person} works for {bridge}.", "{Pronoun} works for {bridge}."),
        ("{bridge} is based in {answer}.", "The company is based in {answer}."),
        "works for {bridge}",
        "based in {answer}",
    ),
    _Relation(
        "studied_at",
        "In what year was the college where {person} studied founded?",
        ("{person} studied at {bridge}.", "{Pronoun} studied at {bridge}."),
        ("{Bridge} was founded in {answer}.", "The college was founded in {answer}."),
        "studied at {bridge}",
        "founded in {answer}",
    ),
    _Relation(
        "owns_horse",
        "Which race did the horse owned by {person} win?",
        ("{person} owns a racehorse called {bridge}.", "{Pronoun} owns a racehorse called {bridge}."),
        ("{bridge} won the {answer}.", "The horse won the {answer}."),
        "racehorse called {bridge}",
        "won the {answer}",
    ),
)
MULTIHOP_RELATIONS = tuple(relation.name for relation in _RELATIONS)


@dataclass(frozen=True)
class MultiHopSample:
    """One item: documents, question, final answer, the two evidence phrases, labels."""

    documents: tuple[str, ...]
    question: str
    answers: tuple[str, ...]
    evidence: tuple[str, ...]
    relation: str
    qtype: str


def _combos(first: Sequence[str], second: Sequence[str], joiner: str) -> list[str]:
    return sorted({f"{a}{joiner}{b}" for a in first for b in second})


def _bridges(relation: str, rng: random.Random, count: int) -> list[str]:
    names = {
        "born_in": _combos(_PLACE_A, _PLACE_B, ""),
        "works_for": _combos(_COMPANY_A, _COMPANY_B, " "),
        "studied_at": _combos(_COLLEGE_A, _COLLEGE_B, " "),
        "owns_horse": _combos(_HORSE_A, _HORSE_B, " "),
    }[relation]
    return rng.sample(names, count)


def _answers(relation: str, rng: random.Random, count: int) -> list[str]:
    if relation == "born_in":
        return rng.sample(_combos(_RIVER_A, _RIVER_B, ""), count)
    if relation == "works_for":
        return rng.sample(_combos(_CITY_A, _CITY_B, " "), count)
    if relation == "studied_at":
        return [str(year) for year in rng.sample(range(1600, 1990), count)]
    return rng.sample(_combos(_RACE_A, _RACE_B, " "), count)


def _person_doc(person: str, pronoun: str, fact: str, rng: random.Random) -> str:
    """Name first, the fact two sentences later (the shape where attention to the matching
    name does not reach the fact)."""
    profession = rng.choice(_PROFESSIONS)
    article = "an" if profession[0] in "aeiou" else "a"
    hobby = re.sub(r"\bher\b", "his" if pronoun == "he" else "her", rng.choice(_HOBBIES))
    aside = rng.choice(_ASIDES).format(
        Pronoun=pronoun.capitalize(), pronoun=pronoun, pronoun_obj="him" if pronoun == "he" else "her"
    )
    return f"{person} is {article} {profession}. {pronoun.capitalize()} {hobby}. {fact} {aside}"


def _entity_doc(relation: str, bridge: str, fact: str, rng: random.Random) -> str:
    if relation == "born_in":
        return f"{bridge} is a {rng.choice(_SIZES)} town in the western hills. {rng.choice(_SCENES)}. {fact}"
    if relation == "works_for":
        return f"{bridge} was set up by two former apprentices and now employs several hundred people. {fact}"
    if relation == "studied_at":
        return f"{bridge[0].upper() + bridge[1:]} is known for its library and its rowing club. {fact}"
    return f"{bridge} is a bay racehorse trained on the downs. {fact}"


def multihop_sample(length: int, tokenizer: Tokenizer, seed: int) -> MultiHopSample:
    """One multi-hop item of about ``length`` target tokens (people and places are added in
    pairs, each pair a confuser carrying the same relations, until the length is reached).

    Parameters
    ----------
    length
        Wanted context length in ``tokenizer``'s tokens.
    tokenizer
        The target's tokenizer (budgets are counted in it).
    seed
        Makes the item; the relation and the wording (lexical / coref) cycle with it, so any
        run of consecutive seeds is balanced.
    """
    rng = random.Random(seed)
    relation = _RELATIONS[seed % len(_RELATIONS)]
    qtype = ("lexical", "coref")[(seed // len(_RELATIONS)) % 2]
    style = 0 if qtype == "lexical" else 1
    pool = 40
    first_names = rng.sample(_FIRST, len(_FIRST))
    last_names = rng.sample(_LAST, len(_LAST))
    people = [f"{first_names[i % len(_FIRST)]} {last_names[i % len(_LAST)]}" for i in range(pool)]
    pronouns = [rng.choice(("she", "he")) for _ in people]
    bridges = _bridges(relation.name, rng, pool)
    answers = _answers(relation.name, rng, len(bridges))
    documents: list[str] = []
    total = 0
    index = 0
    while index < len(bridges) and (index < 4 or total < length):
        person, pronoun, bridge, answer = people[index], pronouns[index], bridges[index], answers[index]
        fields = {"person": person, "Pronoun": pronoun.capitalize(), "bridge": bridge}
        fields["Bridge"] = bridge[0].upper() + bridge[1:]
        hop1 = relation.hop1[style].format(**fields)
        hop2 = relation.hop2[style].format(bridge=bridge, Bridge=fields["Bridge"], answer=answer)
        pair = [_person_doc(person, pronoun, hop1, rng), _entity_doc(relation.name, fields["Bridge"], hop2, rng)]
        documents.extend(pair)
        total += sum(len(tokenizer.encode(text, add_special_tokens=False)) for text in pair)
        index += 1
    # Shuffle, then make the asked person's two documents land apart (never adjacent), so
    # keeping one document's neighbours does not pick up the bridge by accident.
    order = list(range(len(documents)))
    rng.shuffle(order)
    shuffled = [documents[i] for i in order]
    target = 0
    question = relation.question.format(person=people[target])
    evidence = (
        relation.evidence1.format(bridge=bridges[target]),
        relation.evidence2.format(answer=answers[target]),
    )
    return MultiHopSample(
        documents=tuple(shuffled),
        question=question,
        answers=(answers[target],),
        evidence=evidence,
        relation=relation.name,
        qtype=qtype,
    )


def check_sample(sample: MultiHopSample) -> None:
    """Invariants every item must hold (the test suite checks them over many seeds).

    Raises
    ------
    AssertionError
        If an evidence phrase is not in exactly one document, the answer appears in another
        document than the second fact's, or the bridge is named in the question.
    """
    text = "\n\n".join(sample.documents)
    for phrase in sample.evidence:
        assert sum(phrase in doc for doc in sample.documents) == 1, phrase
    holder = next(doc for doc in sample.documents if sample.evidence[1] in doc)
    assert sample.answers[0] in holder and text.count(sample.evidence[1]) == 1
    bridge = [word for word in sample.evidence[0].split() if word[0].isupper()]
    assert bridge and not any(word in sample.question for word in bridge), (bridge, sample.question)
