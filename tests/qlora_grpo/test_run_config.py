import pytest

from qlora_grpo.errors import UserError
from qlora_grpo.run_config import read_run_config


def test_read_run_config_missing_empty_and_valid(tmp_path):
    assert read_run_config(None) == {}
    assert read_run_config(tmp_path) == {}  # evaluating a plain adapter dir: nothing to inherit
    with pytest.raises(UserError, match="run_config.yaml not found"):
        read_run_config(tmp_path, required=True)
    (tmp_path / "run_config.yaml").write_text("")
    assert read_run_config(tmp_path) == {}
    (tmp_path / "run_config.yaml").write_text("# resolved config\ntemplate: no-think\nquantization: nf4\n")
    assert read_run_config(tmp_path) == {"template": "no-think", "quantization": "nf4"}


@pytest.mark.parametrize("text", ["template: [think\n", "- a\n- b\n", "just a string\n", "\x00\x01: :"])
def test_read_run_config_refuses_a_broken_file_by_name(tmp_path, text):
    (tmp_path / "run_config.yaml").write_text(text)
    with pytest.raises(UserError) as e:
        read_run_config(tmp_path)
    assert str(tmp_path / "run_config.yaml") in str(e.value) and "restore it" in str(e.value)
