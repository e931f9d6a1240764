"""The embedded default corpus: synthetic authors whose context carries real, persistent signal.

Every author has traits that hold across all of their messages, so what a model learns about an author from
early messages helps it predict later ones:
  - a topic mixture over six hobbies, drifting slowly from one mixture to another over the author's timeline;
  - a personal signature: a made-up hashtag, a favourite adjective, a sign-off line and a greeting habit;
  - a register tied to a numeric attribute (`age`): older authors write formally, younger ones use slang;
  - a stance (against / none / favor) on each of three made-up local issues.
Message-level labels: the stance of messages that talk about an issue (some of them; the rest are unlabelled
history). Half of the labelled messages state the stance in words, half only mention the issue, so a model
needs the author's other messages to get them right.
Author-level labels: `persona` (the hobby the author starts out writing about most) and `age` (a float).

All text comes from the word lists below. Output: a pandas DataFrame with the real corpora's columns
(user_id, message_id, timestamp, message, label) plus `target`, `persona` and `age`, sorted by time across
authors (as a feed would be). Deterministic for a given seed.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pandas as pd

STANCE_LABELS = ("against", "none", "favor")
AUTHOR_COLUMNS = ("persona", "age")

TOPICS = {
    "gardener": ("seedlings", "compost", "tomatoes", "hedge", "tulips", "greenhouse", "mulch", "weeds", "orchard",
                 "pruning shears", "raised bed", "watering can"),
    "cook": ("dough", "broth", "garlic", "skillet", "pastry", "noodles", "spice rack", "sourdough", "oven",
             "chutney", "dumplings", "marinade"),
    "cyclist": ("saddle", "gears", "headwind", "chain", "hill climb", "helmet", "tyres", "descent", "sprint",
                "bike path", "handlebars", "training ride"),
    "stargazer": ("telescope", "nebula", "moon", "comet", "eclipse", "constellation", "lens", "meteor shower",
                  "star chart", "night sky", "observatory", "orbit"),
    "musician": ("chords", "rehearsal", "drummer", "melody", "amplifier", "chorus", "vinyl", "tempo", "setlist",
                 "bass line", "open mic", "tuning"),
    "coder": ("compiler", "unit tests", "refactor", "merge", "deploy", "branch", "linter", "stack trace",
              "pull request", "build", "regression", "code review"),
}
VERBS = ("fixed", "tried", "finished", "started", "cleaned", "planned", "shared", "checked", "rebuilt", "tested",
         "moved", "sorted out")
ADJECTIVES = ("splendid", "gnarly", "lovely", "wild", "tidy", "brilliant", "messy", "quiet", "bold", "cosy",
              "wonky", "sharp", "mellow", "fierce", "chunky", "breezy")
SYLLABLES = ("ka", "lo", "mi", "zu", "ren", "ta", "vo", "pel", "shi", "no", "bar", "qui", "dex", "ola", "fen", "tor")
SIGN_OFFS = ("more soon", "over and out", "stay curious", "onwards", "back tomorrow", "peace", "that is all",
             "catch you later", "until next time", "carry on")
GREETINGS = ("morning all", "hello friends", "right then", "so", "okay", "hey folks", "well well")
FORMAL = ("Today I", "This morning I", "I have", "Yesterday I", "This week I")
CASUAL = ("lol just", "ngl i", "tbh i", "omg i", "ok so i", "lowkey i")
TIME_PHRASES = ("before lunch", "after work", "all weekend", "at dawn", "late at night", "in the rain", "again")
TARGETS = {
    "harbour tunnel": "the harbour tunnel",
    "four-day week": "the four-day week",
    "skate park ban": "the skate park ban",
}
EXPLICIT = {
    "favor": ("totally support {t}", "{t} is a great idea", "cannot wait for {t}", "vote yes on {t}"),
    "against": ("strongly oppose {t}", "{t} is a waste of money", "{t} is a terrible plan", "vote no on {t}"),
    "none": ("no opinion on {t} really", "{t} is not my business", "do not care much about {t}"),
}
MENTION = ("heard more news about {t}", "the meeting about {t} is tonight", "everyone keeps talking about {t}",
           "read the report on {t}", "{t} came up at dinner")


def _mixture(rng: random.Random, main: int, n: int) -> list[float]:
    """A topic mixture concentrated on `main` (weights sum to 1)."""
    weights = [rng.random() * 0.3 for _ in range(n)]
    weights[main] += 2.0
    total = sum(weights)
    return [w / total for w in weights]


def _author(rng: random.Random, index: int) -> dict:
    topics = list(TOPICS)
    main = rng.randrange(len(topics))
    later = (main + rng.randrange(1, len(topics))) % len(topics)  # the hobby the author drifts towards
    age = round(rng.uniform(18, 70), 1)
    return {
        "user_id": f"u{index:04d}",
        "persona": topics[main],
        "age": age,
        "mix_start": _mixture(rng, main, len(topics)),
        "mix_end": [(a + b) / 2 for a, b in zip(_mixture(rng, main, len(topics)), _mixture(rng, later, len(topics)))],
        "formality": (age - 18) / 52,  # chance of the formal register
        "hashtag": "#" + "".join(rng.choice(SYLLABLES) for _ in range(3)),
        "pet_adjective": rng.choice(ADJECTIVES),
        "sign_off": rng.choice(SIGN_OFFS),
        "greeting": rng.choice(GREETINGS),
        "stance": {t: rng.choices(STANCE_LABELS, weights=(0.4, 0.2, 0.4))[0] for t in TARGETS},
        "offset_hours": rng.choice((-8, -5, 0, 1, 2, 5.5, 8, 10)),
        "start": datetime(2019, 1, 1, tzinfo=timezone.utc) + timedelta(days=rng.uniform(0, 1000)),
    }


def _hobby_sentence(rng: random.Random, author: dict, progress: float) -> str:
    weights = [(1 - progress) * a + progress * b for a, b in zip(author["mix_start"], author["mix_end"])]
    topic = rng.choices(list(TOPICS), weights=weights)[0]
    words = TOPICS[topic]
    opener = rng.choice(FORMAL) if rng.random() < author["formality"] else rng.choice(CASUAL)
    noun, other = rng.sample(words, 2)
    adjective = author["pet_adjective"] if rng.random() < 0.6 else rng.choice(ADJECTIVES)
    return f"{opener} {rng.choice(VERBS)} the {noun} {rng.choice(TIME_PHRASES)}, feeling {adjective} about the {other}"


def _message(rng: random.Random, author: dict, progress: float) -> tuple[str, str | None, str | None]:
    """One message: (text, stance label or None, target or None)."""
    parts = [author["greeting"]] if rng.random() < 0.4 else []
    label = target = None
    if rng.random() < 0.25:  # the author talks about a local issue
        target = rng.choice(list(TARGETS))
        stance = author["stance"][target] if rng.random() < 0.9 else rng.choice(STANCE_LABELS)
        explicit = rng.random() < 0.5
        template = rng.choice(EXPLICIT[stance] if explicit else MENTION)
        parts.append(template.format(t=TARGETS[target]))
        label = stance if rng.random() < 0.6 else None  # the rest stay unlabelled history
    parts.append(_hobby_sentence(rng, author, progress))
    if rng.random() < 0.5:
        parts.append(f"{author['hashtag']} {author['sign_off']}")
    text = ". ".join(parts)
    text = text.lower() if author["formality"] < 0.3 else text[0].upper() + text[1:]
    return text, label, (target if label else None)


def synthetic_corpus(n_authors: int = 200, messages_per_author: int = 40, seed: int = 0) -> pd.DataFrame:
    """Synthetic authors with persistent traits (see the module docstring); same seed, same frame.

    Each author writes between half and one and a half times `messages_per_author` messages, a few hours to
    a few weeks apart. Timestamps are ISO-8601 with the author's UTC offset; message ids grow with time.
    """
    rng = random.Random(seed)
    rows = []
    for index in range(n_authors):
        author = _author(rng, index)
        count = rng.randint(max(1, messages_per_author // 2), max(1, messages_per_author * 3 // 2))
        when = author["start"]
        zone = timezone(timedelta(hours=author["offset_hours"]))
        for m in range(count):
            when += timedelta(hours=rng.uniform(2, 24 * 20))
            text, label, target = _message(rng, author, m / max(1, count - 1))
            rows.append({"user_id": author["user_id"], "when": when,
                         "timestamp": when.astimezone(zone).isoformat(timespec="seconds"),
                         "message": text, "label": label, "target": target,
                         "persona": author["persona"], "age": author["age"]})
    frame = pd.DataFrame(rows).sort_values(["when", "user_id"], kind="stable").reset_index(drop=True)
    frame.insert(1, "message_id", range(1, len(frame) + 1))
    return frame[["user_id", "message_id", "timestamp", "message", "label", "target", "persona", "age"]]
