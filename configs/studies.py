"""The paper's ablations on a trained MVTec-layout run, one command each (fmjax/studies/ablations.py).

  python -m fmjax.main --config configs/studies.py:compute --workdir runs/bottle --mode=study \
      --config.data.categories=bottle
  ... configs/studies.py:aggregators   (Table 7: min, mean, q0.1, q0.2, q0.3)
  ... configs/studies.py:checkpoints   (Table 9: every kept checkpoint; train with a large
                                        --config.train.keep_checkpoints to keep them)
  ... configs/studies.py:seeds         (scoring seeds --config.study.seeds=0,1,2: the spread)
  ... configs/studies.py:pooling       (Table 8: conditional vs pooled; trains the pooled model
                                        in <workdir>/studies/pooling/pooled/ with the same recipe)
  ... configs/studies.py:methods       (Tables 4/5: the scorers of the same model;
                                        --config.study.methods=flow_mismatch,reconflow,dflow,radar)

The model and data settings must be the ones the workdir was trained with (here the
paper's, as in configs/mvtec.py). Results: <workdir>/studies/<name>/results.{md,json}, plot.png.
"""

from fmjax import configlib


def get_config(study: str = "compute"):
  config = configlib.base_config()
  config.data.name = "mvtec"
  config.data.root = "../shared/data/mvtec"
  config.study.name = study
  return config
