"""The text the tiny checkpoints' tokenizer is trained on, generated offline.

A tokenizer trained on this gives the tiny models token boundaries that look like a real
Qwen vocabulary for the text Mondrian actually feeds them: English prose about
photographs, critique JSON with the schema's keys, scores, camera settings and
punctuation. The generator is deterministic (a fixed `random.Random` over fixed word
lists), so the trained tokenizer is byte-identical from one build to the next.

Only the standard library and `mondrian.schema` are used here, so this stays light.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator

from mondrian.schema import DIMENSIONS

# Changing anything below changes every tiny tokenizer; bump this so the artifacts say so.
CORPUS_VERSION = "1"

_SEED = 20261122

PHOTOGRAPHERS = (
    "Ansel Adams",
    "Henri Cartier-Bresson",
    "Fan Ho",
    "Dorothea Lange",
    "Vivian Maier",
    "Edward Weston",
    "Imogen Cunningham",
    "Robert Capa",
    "Sebastião Salgado",
    "Saul Leiter",
    "Diane Arbus",
    "Walker Evans",
    "Berenice Abbott",
    "Alfred Stieglitz",
    "Garry Winogrand",
    "Fay Godwin",
)

NOUNS = [
    "photograph",
    "picture",
    "image",
    "frame",
    "print",
    "negative",
    "exposure",
    "shutter",
    "aperture",
    "lens",
    "camera",
    "light",
    "shadow",
    "highlight",
    "tone",
    "contrast",
    "texture",
    "grain",
    "detail",
    "edge",
    "line",
    "shape",
    "form",
    "pattern",
    "rhythm",
    "balance",
    "harmony",
    "tension",
    "mood",
    "atmosphere",
    "emotion",
    "story",
    "moment",
    "gesture",
    "glance",
    "face",
    "figure",
    "portrait",
    "street",
    "city",
    "alley",
    "doorway",
    "window",
    "stair",
    "bridge",
    "river",
    "mountain",
    "valley",
    "forest",
    "tree",
    "leaf",
    "branch",
    "rock",
    "cliff",
    "canyon",
    "desert",
    "dune",
    "beach",
    "wave",
    "ocean",
    "sea",
    "shore",
    "harbor",
    "boat",
    "sky",
    "cloud",
    "storm",
    "rain",
    "fog",
    "mist",
    "snow",
    "ice",
    "sun",
    "sunrise",
    "sunset",
    "dusk",
    "dawn",
    "twilight",
    "night",
    "moon",
    "star",
    "horizon",
    "foreground",
    "background",
    "midground",
    "subject",
    "eye",
    "hand",
    "child",
    "woman",
    "man",
    "crowd",
    "market",
    "cafe",
    "train",
    "station",
    "platform",
    "road",
    "path",
    "fence",
    "wall",
    "roof",
    "tower",
    "church",
    "temple",
    "garden",
    "flower",
    "field",
    "meadow",
    "farm",
    "barn",
    "horse",
    "bird",
    "dog",
    "cat",
    "reflection",
    "silhouette",
    "outline",
    "corner",
    "diagonal",
    "curve",
    "circle",
    "square",
    "triangle",
    "symmetry",
    "asymmetry",
    "space",
    "depth",
    "distance",
    "perspective",
    "scale",
    "layer",
    "plane",
    "color",
    "hue",
    "saturation",
    "palette",
    "warmth",
    "coolness",
    "blue",
    "red",
    "green",
    "yellow",
    "orange",
    "purple",
    "gray",
    "black",
    "white",
    "sepia",
    "monochrome",
    "darkroom",
    "developer",
    "paper",
    "film",
    "sensor",
    "pixel",
    "noise",
    "blur",
    "focus",
    "sharpness",
    "bokeh",
    "depth-of-field",
    "tripod",
    "filter",
    "flash",
    "lamp",
    "streetlight",
    "neon",
    "sign",
    "poster",
    "umbrella",
    "coat",
    "hat",
    "bicycle",
    "car",
    "bus",
    "tram",
    "steam",
    "smoke",
    "dust",
    "haze",
    "glow",
    "sparkle",
    "ripple",
    "puddle",
    "stone",
    "brick",
    "wood",
    "metal",
    "glass",
    "mirror",
    "door",
    "gate",
    "balcony",
    "courtyard",
    "square",
    "plaza",
    "avenue",
    "neighborhood",
    "village",
    "town",
    "skyline",
    "rooftop",
    "zone",
    "system",
    "meter",
    "histogram",
    "crop",
    "border",
    "margin",
    "thirds",
    "center",
    "weight",
    "mass",
    "void",
    "negative-space",
    "leading-line",
    "vanishing-point",
    "intention",
    "vision",
    "voice",
    "craft",
    "discipline",
    "patience",
    "timing",
    "instinct",
    "geometry",
    "chance",
    "encounter",
    "wonder",
    "silence",
    "solitude",
    "memory",
]

ADJECTIVES = [
    "quiet",
    "soft",
    "hard",
    "harsh",
    "gentle",
    "bright",
    "dark",
    "deep",
    "shallow",
    "wide",
    "narrow",
    "tall",
    "low",
    "high",
    "long",
    "short",
    "warm",
    "cool",
    "cold",
    "hot",
    "muted",
    "vivid",
    "rich",
    "pale",
    "subtle",
    "bold",
    "strong",
    "weak",
    "clean",
    "busy",
    "cluttered",
    "simple",
    "complex",
    "calm",
    "tense",
    "still",
    "restless",
    "balanced",
    "unbalanced",
    "centered",
    "off-center",
    "sharp",
    "soft-focus",
    "blurred",
    "crisp",
    "grainy",
    "smooth",
    "rough",
    "luminous",
    "dim",
    "glowing",
    "dramatic",
    "delicate",
    "intimate",
    "distant",
    "lonely",
    "crowded",
    "empty",
    "open",
    "closed",
    "heavy",
    "light",
    "elegant",
    "awkward",
    "natural",
    "staged",
    "candid",
    "decisive",
    "fleeting",
    "timeless",
    "golden",
    "silver",
    "blue-hour",
    "overcast",
    "diffuse",
    "directional",
    "side-lit",
    "backlit",
    "front-lit",
    "hazy",
    "misty",
    "foggy",
    "rainy",
    "snowy",
    "dusty",
    "vertical",
    "horizontal",
    "diagonal",
    "curved",
    "angular",
    "geometric",
    "organic",
    "layered",
    "flat",
    "three-dimensional",
    "tonal",
    "chromatic",
    "monochromatic",
    "harmonious",
    "discordant",
    "complementary",
    "analogous",
    "saturated",
    "desaturated",
    "underexposed",
    "overexposed",
    "well-exposed",
    "careful",
    "patient",
    "precise",
    "loose",
    "honest",
    "tender",
    "melancholic",
    "joyful",
    "somber",
    "serene",
    "powerful",
    "fragile",
    "ordinary",
    "extraordinary",
    "familiar",
    "strange",
]

VERBS = [
    "frame",
    "compose",
    "expose",
    "develop",
    "print",
    "crop",
    "meter",
    "focus",
    "wait",
    "watch",
    "walk",
    "return",
    "notice",
    "capture",
    "reveal",
    "hide",
    "lead",
    "guide",
    "draw",
    "pull",
    "push",
    "hold",
    "anchor",
    "balance",
    "separate",
    "isolate",
    "simplify",
    "repeat",
    "echo",
    "contrast",
    "soften",
    "sharpen",
    "darken",
    "lighten",
    "dodge",
    "burn",
    "shift",
    "tilt",
    "lower",
    "raise",
    "step",
    "move",
    "turn",
    "open",
    "close",
    "fill",
    "empty",
    "carry",
    "suggest",
    "invite",
    "reward",
    "hold",
    "breathe",
    "rest",
    "divide",
    "connect",
    "follow",
    "cut",
    "flatten",
    "deepen",
    "compress",
    "stretch",
    "glow",
    "fade",
    "scatter",
    "gather",
    "bend",
    "rise",
    "fall",
    "shine",
]

ADVERBS = [
    "slightly",
    "gently",
    "firmly",
    "carefully",
    "quietly",
    "boldly",
    "clearly",
    "softly",
    "strongly",
    "evenly",
    "deliberately",
    "naturally",
    "patiently",
    "precisely",
    "almost",
    "nearly",
    "perhaps",
    "always",
    "never",
    "often",
    "rarely",
    "simply",
    "truly",
    "really",
    "quite",
    "very",
    "too",
]

FUNCTION = [
    "the",
    "a",
    "an",
    "this",
    "that",
    "these",
    "those",
    "its",
    "his",
    "her",
    "their",
    "our",
    "your",
    "my",
    "of",
    "in",
    "on",
    "at",
    "by",
    "with",
    "from",
    "into",
    "onto",
    "over",
    "under",
    "between",
    "behind",
    "before",
    "after",
    "above",
    "below",
    "through",
    "across",
    "along",
    "around",
    "against",
    "toward",
    "and",
    "but",
    "or",
    "so",
    "yet",
    "because",
    "while",
    "when",
    "where",
    "which",
    "who",
    "what",
    "how",
    "why",
    "if",
    "then",
    "than",
    "as",
    "is",
    "are",
    "was",
    "were",
    "be",
    "been",
    "being",
    "has",
    "have",
    "had",
    "do",
    "does",
    "did",
    "can",
    "could",
    "should",
    "would",
    "will",
    "may",
    "might",
    "must",
    "not",
    "no",
    "more",
    "most",
    "less",
    "least",
    "some",
    "any",
    "each",
    "every",
    "all",
    "both",
    "either",
    "neither",
    "one",
    "two",
    "three",
    "several",
    "many",
    "few",
]

PLACES = (
    "Yosemite",
    "Hong Kong",
    "Paris",
    "New York",
    "San Francisco",
    "London",
    "Kyoto",
    "Lisbon",
    "Marseille",
    "Big Sur",
    "Monument Valley",
    "the Sierra Nevada",
    "Kowloon",
    "Montmartre",
    "Half Dome",
    "Death Valley",
)

APERTURES = ("1.4", "2", "2.8", "4", "5.6", "8", "11", "16", "22", "32", "64")
SHUTTERS = ("1/8000", "1/1000", "1/500", "1/250", "1/125", "1/60", "1/30", "1/15", "1/2", "4")
ISOS = ("50", "100", "200", "400", "800", "1600", "3200", "6400")
FOCALS = ("14", "24", "28", "35", "50", "85", "90", "105", "135", "200", "300")


def _inflect(word: str, rng: random.Random) -> str:
    """A plausible inflected form, so the vocabulary learns common suffixes."""
    if "-" in word:
        return word
    suffix = rng.choice(("", "", "s", "ed", "ing", "ly", "er", "ness"))
    if suffix in ("ed", "ing", "er") and word.endswith("e"):
        word = word[:-1]
    return word + suffix


def _maybe_title(word: str, rng: random.Random) -> str:
    return word.capitalize() if rng.random() < 0.12 else word


class _Writer:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def pick(self, words: tuple[str, ...] | list[str]) -> str:
        return self.rng.choice(words)

    def phrase(self) -> str:
        r = self.rng
        parts = [self.pick(FUNCTION[:4])]
        if r.random() < 0.6:
            parts.append(_inflect(self.pick(ADJECTIVES), r))
        parts.append(_inflect(self.pick(NOUNS), r))
        return " ".join(parts)

    def sentence(self) -> str:
        r = self.rng
        kind = r.randrange(8)
        if kind == 0:
            s = (
                f"{self.pick(PHOTOGRAPHERS)} {_inflect(self.pick(VERBS), r)} "
                f"{self.phrase()} {self.pick(FUNCTION[7:25])} {self.phrase()}"
            )
        elif kind == 1:
            s = (
                f"{self.phrase()} {self.pick(('is', 'feels', 'looks', 'seems', 'reads as'))} "
                f"{self.pick(ADVERBS)} {self.pick(ADJECTIVES)}"
            )
        elif kind == 2:
            s = (
                f"{self.pick(VERBS)} {self.phrase()} so that {self.phrase()} "
                f"{self.pick(('can', 'will', 'may', 'should'))} {self.pick(VERBS)} "
                f"{self.pick(FUNCTION[7:25])} {self.phrase()}"
            )
        elif kind == 3:
            s = (
                f"Shot at f/{self.pick(APERTURES)}, {self.pick(SHUTTERS)} s, "
                f"ISO {self.pick(ISOS)} with a {self.pick(FOCALS)}mm lens in "
                f"{self.pick(PLACES)}, {r.randrange(1900, 2027)}"
            )
        elif kind == 4:
            s = (
                f"In {self.pick(PLACES)}, {self.phrase()} {_inflect(self.pick(VERBS), r)} "
                f"{self.phrase()} while {self.phrase()} {_inflect(self.pick(VERBS), r)}"
            )
        elif kind == 5:
            s = (
                f"The {self.pick(DIMENSIONS).replace('_', ' ')} scores "
                f"{r.randrange(11)}/10: {self.phrase()} {self.pick(VERBS)}s "
                f"{self.pick(ADVERBS)} ({r.randrange(101)}%)"
            )
        elif kind == 6:
            s = (
                f"{self.pick(('Try to', 'Consider how to', 'Next time,', 'Wait to'))} "
                f"{self.pick(VERBS)} {self.phrase()}; {self.phrase()} "
                f"{self.pick(('would', 'could', 'might'))} {self.pick(VERBS)} "
                f"{self.pick(ADVERBS)}"
            )
        else:
            words = [
                _maybe_title(_inflect(self.pick(NOUNS + ADJECTIVES + VERBS + FUNCTION), r), r)
                for _ in range(r.randrange(5, 14))
            ]
            s = " ".join(words)
        s = s[0].upper() + s[1:]
        return s + self.pick((".", ".", ".", "!", "?", "..."))

    def paragraph(self) -> str:
        return " ".join(self.sentence() for _ in range(self.rng.randrange(2, 6)))

    def critique(self) -> str:
        r = self.rng
        body = {
            "image_description": self.sentence(),
            "dimensions": {
                key: {
                    "score": r.randrange(11),
                    "comment": self.sentence(),
                    "recommendation": self.sentence(),
                }
                for key in DIMENSIONS
            },
            "strengths": [self.sentence() for _ in range(r.randrange(1, 4))],
            "improvements": [self.sentence() for _ in range(r.randrange(1, 4))],
        }
        if r.random() < 0.3:
            body["overall_score"] = round(r.uniform(0, 10), 2)
            body["overall_grade"] = r.choice(("A", "A-", "B+", "B", "B-", "C+", "C", "D", "F"))
        # Both the compact form (what constrained decoding emits) and the pretty form.
        if r.random() < 0.5:
            return json.dumps(body, separators=(",", ":"), ensure_ascii=False)
        return json.dumps(body, indent=r.choice((None, 2)), ensure_ascii=False)

    def chat(self) -> str:
        return (
            f"system\nYou are {self.pick(PHOTOGRAPHERS)}. {self.paragraph()}\n"
            f"user\nCritique this photograph. {self.sentence()}\n"
            f"assistant\n{self.critique()}"
        )


def corpus(n_docs: int = 1500) -> Iterator[str]:
    """Yield the training documents, the same ones on every call."""
    writer = _Writer(random.Random(_SEED))
    for i in range(n_docs):
        kind = i % 5
        if kind in (0, 1):
            yield writer.paragraph()
        elif kind == 2:
            yield writer.critique()
        elif kind == 3:
            yield writer.chat()
        else:
            nums = " ".join(
                str(writer.rng.randrange(10 ** writer.rng.randrange(1, 6))) for _ in range(8)
            )
            yield f"{writer.sentence()} {nums}\n{writer.paragraph()}"
