"""Catalogue side features: words of name and description, categories, price band.

A vocabulary is built per training run from the products themselves; words used by
a single product carry no shared signal and are dropped. Price bands are deciles of
the catalogue's prices, so "cheap" means cheap for this store.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from recommendations.training.model import ItemFeatures

MAX_WORDS = 16
MAX_CATEGORIES = 4
PRICE_BANDS = 10
_WORD = re.compile(r"[a-z0-9]+")


@dataclass
class ProductInfo:
    name: str = ""
    description: str = ""
    categories: Sequence[str] = ()
    price: float | None = None


def tokens(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if len(w) > 1 and not w.isdigit()]


@dataclass
class FeatureVocab:
    """Word and category ids and price band edges. Kept with the model, so an
    online update gives the same ids to the same words (new ones are appended)."""

    words: list[str]
    categories: list[str]
    price_edges: list[float]


def build_features(
    infos: Sequence[ProductInfo | None], *, vocab: FeatureVocab | None = None, min_count: int = 2
) -> tuple[ItemFeatures, FeatureVocab]:
    """Side features for items 0..len(infos)-1 (None: nothing known)."""
    n = len(infos)
    word_lists = []
    for info in infos:
        if info is None:
            word_lists.append([])
            continue
        words = list(dict.fromkeys(tokens(info.name) + tokens(info.description)))
        word_lists.append(words[:MAX_WORDS])
    counts = Counter(w for ws in word_lists for w in ws)
    word_list = list(vocab.words) if vocab else []
    known_words = set(word_list)
    word_list += sorted(w for w, c in counts.items() if c >= min_count and w not in known_words)
    word_ids = {w: i + 1 for i, w in enumerate(word_list)}
    words = np.zeros((n, MAX_WORDS), np.int32)
    for i, ws in enumerate(word_lists):
        ids = [word_ids[w] for w in ws if w in word_ids][:MAX_WORDS]
        words[i, : len(ids)] = ids
    cat_list = list(vocab.categories) if vocab else []
    cat_ids = {c: i + 1 for i, c in enumerate(cat_list)}
    cats = np.zeros((n, MAX_CATEGORIES), np.int32)
    for i, info in enumerate(infos):
        if info is None:
            continue
        for j, c in enumerate(category_path(info.categories)):
            if j >= MAX_CATEGORIES:
                break
            key = c.lower()
            if key not in cat_ids:
                cat_list.append(key)
                cat_ids[key] = len(cat_list)
            cats[i, j] = cat_ids[key]
    prices = np.array([np.nan if (x is None or x.price is None) else float(x.price) for x in infos], dtype=np.float64)
    bands = np.zeros(n, np.int32)
    known = np.isfinite(prices) & (prices > 0)
    edges = list(vocab.price_edges) if vocab else []
    if not edges and known.any():
        edges = np.quantile(prices[known], np.linspace(0, 1, PRICE_BANDS + 1)[1:-1]).tolist()
    if known.any():
        bands[known] = np.searchsorted(np.asarray(edges), prices[known], side="right") + 1
    feats = ItemFeatures(
        words=words,
        categories=cats,
        price_band=bands,
        n_words=len(word_list) + 1,
        n_categories=len(cat_list) + 1,
        n_bands=PRICE_BANDS + 1,
    )
    return feats, FeatureVocab(words=word_list, categories=cat_list, price_edges=[float(e) for e in edges])


def category_path(categories: Sequence[str] | None) -> list[str]:
    """["Electronics", "Phones"] and ["Electronics > Phones"] both give each level once."""
    path: list[str] = []
    for c in categories or ():
        path.extend(part.strip() for part in str(c).split(">") if part.strip())
    return list(dict.fromkeys(path))
