"""Pretokenization: a dataset's images turned into a learned tokenizer's ids, once, on disk.

`python -m mmjax.pretokenize --tokenizer WORKDIR --dataset mm_world/default --out DIR`
writes DIR/<dataset>_tokens/<config>/1.0.0/, a TFDS ArrayRecord dataset that recipes read by
name (data.name="mm_world_tokens/default", data.data_dir=DIR). tokenizer.py loads the
tokenizer from its workdir, layout.py owns the folder and its manifest, writer.py writes
shards and metadata, run.py drives them. An entry point like mmjax.evaluate: it may import
anything but the trainer.
"""
