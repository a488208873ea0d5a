"""runtime.cpu: how an INT8 engine runs on a CPU, from its flags."""

import pytest

from runtime import cpu
from runtime.errors import BackendUnavailableError

AVX2 = frozenset({"sse4_2", "avx", "avx2", "fma"})


@pytest.mark.parametrize("flags,expected", [
    (AVX2 | {"avx512f", "avx512_vnni"}, "avx512_vnni"),  # Intel Xeon since Cascade Lake, AMD Zen 4/5
    (AVX2 | {"avx_vnni"}, "avx_vnni"),  # Alder Lake and later clients
    (AVX2 | {"avx512_vnni", "amx_int8", "amx_tile"}, "amx_int8"),  # Sapphire Rapids: the best unit named
])
def test_vnni_and_amx_run_int8(flags, expected, monkeypatch):
    monkeypatch.delenv(cpu.INT8_SIMULATE_ENV, raising=False)
    assert cpu.int8_arithmetic(flags) == expected


def test_other_cpus_are_refused_or_simulated(monkeypatch):
    monkeypatch.delenv(cpu.INT8_SIMULATE_ENV, raising=False)
    for flags in (AVX2, frozenset()):  # AVX2 only (AMD Zen 3); nothing readable (not Linux)
        with pytest.raises(BackendUnavailableError, match="no VNNI or AMX") as info:
            cpu.int8_arithmetic(flags)
        assert info.value.exit_code == 4 and cpu.INT8_SIMULATE_ENV in str(info.value)
    monkeypatch.setenv(cpu.INT8_SIMULATE_ENV, "1")
    assert cpu.int8_arithmetic(AVX2) == cpu.SIMULATED
    assert cpu.int8_arithmetic(AVX2 | {"avx512_vnni"}) == "avx512_vnni"  # the variable changes nothing on a VNNI CPU


def test_flags_are_this_cpus():
    flags = cpu.cpu_flags()
    assert isinstance(flags, frozenset)
    assert not flags or "fpu" in flags or "sse2" in flags  # x86 Linux names them; elsewhere empty
