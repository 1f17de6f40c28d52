from django.core.management import call_command

from operations import metrics


def test_clear_metrics_removes_only_metric_files(settings, tmp_path, capsys):
    settings.WXNOTIFY_METRICS_DIR = tmp_path
    (tmp_path / "counter_123.db").write_bytes(b"x")
    (tmp_path / "histogram_456.db").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("keep")

    call_command("clear_metrics")

    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    assert "Removed 2 metric file(s)" in capsys.readouterr().out
    assert metrics.clear_multiprocess_files() == 0
