"""Deterministic English sentences for the synthetic corpus: a small grammar over word lists.

No download, no corpus: a seed and an index give the same sentence on every machine. The grammar
mixes statements, questions, exclamations, lists and numbers so prosody and phone coverage vary.
"""

from __future__ import annotations

import random

NAMES = """Alice Bob Carol David Emma Frank Grace Henry Isla Jack Karen Liam Mary Noah Olivia Peter Quinn
Rachel Sam Tara Umar Vera Walter Xena Yusuf Zoe Agnes Bruno Chloe Duncan Elsie Fergus Gemma Hamish Ivy
Joseph Kirsty Lachlan Moira Niall Orla Patrick Rosie Stuart Thea Callum Fiona Euan Shona Rhys Megan
Dylan Bethan Owen Siobhan Declan Aoife Connor Priya Arjun Mei Kenji""".split()
NOUNS = """apple river mountain teacher doctor garden kitchen window bicycle letter newspaper museum
station village market bridge island forest castle harbour library hospital school office
concert festival winter summer morning evening storm rainbow cloud engine computer telephone
camera picture song story book table chair door street road train plane ship bus ticket umbrella
jacket kettle basket bottle candle mirror pillow blanket ladder bucket hammer pencil notebook
lemon orange potato onion carrot sandwich biscuit pudding cheese butter coffee tea water soup
horse sheep rabbit fox owl eagle salmon dolphin tiger elephant kitten puppy parrot spider
football tennis chess piano guitar violin trumpet drum painting poem lecture meeting journey
holiday birthday wedding parliament election budget council report policy company factory
farmer sailor soldier nurse pilot driver singer painter writer lawyer builder baker student""".split()
ADJECTIVES = """old young tall small bright dark quiet noisy happy sad busy lazy clever brave gentle
strange famous ancient modern heavy light warm cold wet dry green red blue yellow golden silver
wooden broken empty crowded careful curious friendly angry tired hungry lucky simple difficult
expensive cheap beautiful ugly narrow wide distant local northern southern rural quick slow""".split()
VERBS = """found painted visited opened closed carried bought sold watched followed borrowed repaired
cleaned cooked ordered answered described remembered forgot noticed discovered signed
delivered collected posted photographed measured counted packed moved lifted dropped""".split()
INTRANSITIVE = """arrived laughed waited slept travelled complained disappeared smiled shouted
danced listened hesitated agreed retired vanished returned""".split()
PLACES = """in the park|at the station|near the harbour|behind the church|under the bridge|on the hill
|in the old town|by the river|across the square|at the end of the street|in the garden|on the island
|inside the museum|outside the library|at the market|in Edinburgh|in London|in Glasgow|in Cardiff
|in Belfast|in Dublin|in Manchester|in York|in Aberdeen|on the coast|in the valley""".replace("\n", "").split("|")
TIMES = """yesterday|last night|this morning|on Monday|on Friday evening|every Sunday|in the spring
|after lunch|before dawn|at midnight|two weeks ago|next year|during the holidays|at half past seven
|in nineteen ninety|at the weekend|later today|once upon a time""".replace("\n", "").split("|")
ADVERBS = """quickly slowly carefully happily suddenly quietly proudly nervously calmly eagerly""".split()
CONNECTIVES = ["and then", "but", "because", "although", "so", "while", "until", "after"]
NUMBERS = ["two", "three", "four", "five", "seven", "ten", "twelve", "fifteen", "twenty", "forty",
           "a hundred", "several", "a few", "many", "eleven", "ninety"]


def _np(r: random.Random, plural: bool | None = None) -> str:
    """A noun phrase: 'the old river', 'a bright window', 'three red apples', 'Alice'."""
    if r.random() < 0.15:
        return r.choice(NAMES)
    noun = r.choice(NOUNS)
    adj = r.choice(ADJECTIVES) + " " if r.random() < 0.55 else ""
    if plural or (plural is None and r.random() < 0.25):
        plural_noun = noun + ("es" if noun.endswith(("s", "sh", "ch", "x", "o")) else "s")
        return f"{r.choice(NUMBERS)} {adj}{plural_noun}"
    det = r.choice(["the", "the", "a", "my", "our", "their", "this", "that"])
    if det == "a" and (adj or noun)[0] in "aeiou":
        det = "an"
    return f"{det} {adj}{noun}"


def _clause(r: random.Random) -> str:
    kind = r.random()
    if kind < 0.55:
        s = f"{_np(r)} {r.choice(VERBS)} {_np(r)}"
    elif kind < 0.8:
        s = f"{_np(r)} {r.choice(INTRANSITIVE)}"
    else:
        s = f"{_np(r)} was {r.choice(ADJECTIVES)}"
    if r.random() < 0.4:
        s += " " + r.choice(PLACES)
    if r.random() < 0.3:
        s += " " + r.choice(TIMES)
    if r.random() < 0.15 and kind < 0.8:
        s += " " + r.choice(ADVERBS)
    return s


def sentence(r: random.Random) -> str:
    """One sentence, 4 to about 30 words, with final punctuation."""
    form = r.random()
    if form < 0.12:
        s = f"{r.choice(['did', 'why did', 'where did', 'when did'])} {_np(r)} {r.choice(['see', 'find', 'visit', 'open', 'carry'])} {_np(r)}?"
    elif form < 0.2:
        s = f"{r.choice(['what a', 'such a'])} {r.choice(ADJECTIVES)} {r.choice(NOUNS)}!"
    elif form < 0.28:
        items = [_np(r) for _ in range(r.randint(3, 4))]
        s = f"{_np(r)} {r.choice(VERBS)} {', '.join(items[:-1])} and {items[-1]}."
    elif form < 0.34:
        s = f"please call {r.choice(NAMES)} and ask {r.choice(['her', 'him', 'them'])} to bring {_np(r)}."
    elif form < 0.4:
        s = f"{r.choice(TIMES)}, {_clause(r)}."
    else:
        s = _clause(r)
        for _ in range(r.choice([0, 0, 0, 1, 1, 2])):
            s += f"{',' if r.random() < 0.5 else ''} {r.choice(CONNECTIVES)} {_clause(r)}"
        s += r.choice([".", ".", ".", "!", "?"]) if r.random() < 0.9 else "."
    return s[0].upper() + s[1:]


def sentences(seed: int, key: str, n: int) -> list[str]:
    """`n` sentences for a stream named `key` (a speaker id, or "shared"): stable across machines."""
    r = random.Random(f"{seed}:{key}")
    return [sentence(r) for _ in range(n)]
