r"""Caption embedding on the CPU: ie-jax's MiniLM against sentence-transformers, rows/s.

  python bench/text_embed.py [--captions 4096] [--runs 3] [--impls jax,torch]

Both embed the same captions (8-16 WordNet noun lemmas each, as `bench/url_corpus.py`
writes them; about 39 tokens) with the same all-MiniLM-L6-v2 weights, at batch 256, after
an untimed first pass (compilation, thread pools). The reference is sentence-transformers
on PyTorch's CPU build (the `torch` extra), the library the model was published for. A
caption index's build is this embedding (the index adds 0.4% to it at a million rows;
BENCHMARKS), so these rows/s set how long `python -m ie_jax.web.url_corpus index` takes.
Prints a table and the lowest cosine between the two; JSON to
bench/results/text_embed_cpu.json.
"""
import argparse
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
# pylint: disable=wrong-import-position
from ie_jax.web import local_index
import results_io  # bench/, the script's own directory
import url_corpus as url_corpus_bench  # bench/url_corpus.py: the same captions


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python bench/text_embed.py')
  parser.add_argument('--captions', type=int, default=4096)
  parser.add_argument('--runs', type=int, default=3)
  parser.add_argument('--batch', type=int, default=256)
  parser.add_argument('--impls', default='jax,torch', help='jax, torch, or both')
  parser.add_argument('--out', default='')
  args = parser.parse_args(argv)
  texts = list(url_corpus_bench.captions(args.captions))
  wanted = args.impls.split(',')
  ours = local_index.load_embedder()  # also the tokenizer and weights for the reference
  impls = {}
  if 'jax' in wanted:
    impls['jax'] = lambda t: ours.embed(t, batch_size=args.batch, progress=False)
  if 'torch' in wanted:
    from sentence_transformers import SentenceTransformer  # pylint: disable=g-import-not-at-top
    reference = SentenceTransformer(ours.model_dir, device='cpu')
    impls['torch'] = lambda t: reference.encode(t, batch_size=args.batch,
                                                convert_to_numpy=True)
  tokens = np.mean([len(x) for x in ours.tokenizer(texts)['input_ids']])

  rows, outputs = [], {}
  for name, embed in impls.items():
    embed(texts)  # untimed: compiles each padded length, starts the thread pools
    seconds = []
    for _ in range(args.runs):
      start = time.perf_counter()
      outputs[name] = np.asarray(embed(texts), np.float32)
      seconds.append(time.perf_counter() - start)
    rate = args.captions / float(np.median(seconds))
    rows.append({'impl': name, 'seconds': [round(s, 2) for s in seconds],
                 'rows_per_s': round(rate, 1), 'hours_per_million': round(1e6 / rate / 3600, 2)})
  if 'torch' in outputs:
    base = next(r['rows_per_s'] for r in rows if r['impl'] == 'torch')
    for r in rows:
      r['vs_torch'] = round(r['rows_per_s'] / base, 2)
  cosine = None
  if len(outputs) == 2:
    a, b = outputs['jax'], outputs['torch']
    cosine = float(np.min(np.sum(a * b, 1) / np.linalg.norm(a, axis=1)
                          / np.linalg.norm(b, axis=1)))

  print(f'{args.captions} captions, {tokens:.1f} tokens on average, batch {args.batch}, '
        f'{os.cpu_count()} CPUs; medians of {args.runs}')
  print(f'{"impl":<6} | {"rows/s":>7} | {"h / 1M rows":>11} | {"vs torch":>8} | seconds')
  for r in rows:
    print(f'{r["impl"]:<6} | {r["rows_per_s"]:>7} | {r["hours_per_million"]:>11} | '
          f'{r.get("vs_torch", ""):>8} | {r["seconds"]}')
  if cosine is not None:
    print(f'lowest cosine between the two: {cosine:.7f}')
  results_io.write('text_embed', 'text_embed_cpu',
                   {'captions': args.captions, 'mean_tokens': round(float(tokens), 1),
                    'batch': args.batch, 'runs': args.runs, 'lowest_cosine': cosine},
                   rows, args.out)
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
