"""The Python side of the BestCheckpointer test: detectron2's BestCheckpointer hook, driven
by a minimal trainer loop and saving with fvcore's Checkpointer, on a given metric sequence.

    python best_checkpointer.py DIR MODE EVAL_PERIOD MAX_ITER EVALS_JSON

EVALS_JSON maps an iteration to the value an evaluation put into the event storage after it
("nan", "inf", "-inf" for those floats). Prints one JSON line: the hook's log lines
([level, message]) and the `iteration` saved in the best file (null without one).

detectron2 itself needs a compiler to install; the hook's logic below follows detectron2's
`detectron2/engine/hooks.py` (`BestCheckpointer`, schedule of `EvalHook`) line for line, and
the event storage keeps, as detectron2's `EventStorage.latest()` does, the last value put
with the iteration it was put at.
"""

import json
import logging
import math
import operator
import sys

import torch
from torch import nn
from fvcore.common.checkpoint import Checkpointer

LOGGER = "best_checkpointer_reference"


class Storage:
    def __init__(self):
        self._latest = {}

    def put_scalar(self, name, value, iteration):
        self._latest[name] = (value, iteration)

    def latest(self):
        return self._latest


class Trainer:
    def __init__(self, max_iter):
        self.iter = 0
        self.max_iter = max_iter
        self.storage = Storage()


class BestCheckpointer:
    def __init__(self, eval_period, checkpointer, val_metric, mode="max", file_prefix="model_best"):
        self._logger = logging.getLogger(LOGGER)
        self._period = eval_period
        self._val_metric = val_metric
        assert mode in ["max", "min"]
        self._compare = operator.gt if mode == "max" else operator.lt
        self._checkpointer = checkpointer
        self._file_prefix = file_prefix
        self.best_metric = None
        self.best_iter = None

    def _update_best(self, val, iteration):
        if math.isnan(val) or math.isinf(val):
            return False
        self.best_metric = val
        self.best_iter = iteration
        return True

    def _best_checking(self):
        metric_tuple = self.trainer.storage.latest().get(self._val_metric)
        if metric_tuple is None:
            self._logger.warning(
                f"Given val metric {self._val_metric} does not seem to be computed/stored."
                "Will not be checkpointing based on it."
            )
            return
        else:
            latest_metric, metric_iter = metric_tuple

        if self.best_metric is None:
            if self._update_best(latest_metric, metric_iter):
                additional_state = {"iteration": metric_iter}
                self._checkpointer.save(f"{self._file_prefix}", **additional_state)
                self._logger.info(
                    f"Saved first model at {self.best_metric:0.5f} @ {self.best_iter} steps"
                )
        elif self._compare(latest_metric, self.best_metric):
            additional_state = {"iteration": metric_iter}
            self._checkpointer.save(f"{self._file_prefix}", **additional_state)
            self._logger.info(
                f"Saved best model as latest eval score for {self._val_metric} is "
                f"{latest_metric:0.5f}, better than last best score "
                f"{self.best_metric:0.5f} @ iteration {self.best_iter}."
            )
            self._update_best(latest_metric, metric_iter)
        else:
            self._logger.info(
                f"Not saving as latest eval score for {self._val_metric} is {latest_metric:0.5f}, "
                f"not better than best score {self.best_metric:0.5f} @ iteration {self.best_iter}."
            )

    def after_step(self):
        next_iter = self.trainer.iter + 1
        if (
            self._period > 0
            and next_iter % self._period == 0
            and next_iter != self.trainer.max_iter
        ):
            self._best_checking()

    def after_train(self):
        if self.trainer.iter + 1 >= self.trainer.max_iter:
            self._best_checking()


class Capture(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append([record.levelname, record.getMessage()])


def main():
    save_dir, mode, eval_period, max_iter, evals = sys.argv[1:6]
    eval_period, max_iter = int(eval_period), int(max_iter)
    evals = {int(k): float(v) for k, v in json.loads(evals).items()}

    capture = Capture()
    logger = logging.getLogger(LOGGER)
    logger.addHandler(capture)
    logger.setLevel(logging.INFO)

    checkpointer = Checkpointer(nn.Linear(2, 1), save_dir)
    trainer = Trainer(max_iter)
    hook = BestCheckpointer(eval_period, checkpointer, "bbox/AP50", mode=mode)
    hook.trainer = trainer
    for iteration in range(max_iter):
        trainer.iter = iteration
        if iteration in evals:
            # EvalHook runs before this hook and puts its results with the iteration.
            trainer.storage.put_scalar("bbox/AP50", evals[iteration], iteration)
        hook.after_step()
    hook.after_train()

    best_file = f"{save_dir}/model_best.pth"
    try:
        best_iteration = torch.load(best_file, weights_only=False)["iteration"]
    except FileNotFoundError:
        best_iteration = None
    print(json.dumps({"logs": capture.lines, "best_iteration": best_iteration}))


if __name__ == "__main__":
    main()
