"""Evaluation on the held-out test files: a trained model beats predicting no click."""

from pipeline.model.batches import FeatureTables
from pipeline.model.checkpoint import load_checkpoint_model
from pipeline.model.evaluate import evaluate_files
from pipeline.model.training import TrainConfig, train


def test_trained_model_beats_all_zeros_on_the_test_files(tiny_dataset, warehouse):
    train(warehouse, TrainConfig(batch_size=512, threads=1, mode="full", epochs=4, lr=3e-3), log=lambda message: None)
    model, _ = load_checkpoint_model(warehouse.checkpoint)
    result = evaluate_files(model, tiny_dataset.test_files(), FeatureTables.load(warehouse))
    assert result["rows"] == 4_000 and sum(result["dropped"].values()) == 0
    assert result["accuracy"] > result["all_zeros_accuracy"] + 0.2
    assert result["accuracy"] > 0.8 and result["auc"] > 0.9
    assert sum(row["rows"] for row in result["calibration"]) == 4_000
