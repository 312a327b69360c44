"""``retain_freed_memory``: a small conv net's repeated forward reuses its activations' pages instead of faulting
them in again on every pass (the kernel's minor-fault counter, in fresh processes), and the user's own malloc
settings win."""
import json
import os
import platform
import subprocess
import sys

import pytest

PROBE = '''
import json, resource, sys
import torch
from torch import nn
from xcos_lightning.cpu_allocator import retain_freed_memory
retained = retain_freed_memory() if sys.argv[1] == "retain" else False
torch.set_num_threads(1)
net = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 3, 1, 1), nn.ReLU(),
                    nn.Conv2d(64, 64, 3, 2, 1), nn.ReLU()).eval()
faces = torch.rand(16, 3, 112, 112)
faults = []
with torch.inference_mode():
    for _ in range(6):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        net(faces)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"retained": retained, "faults": faults[2:]}))
'''


def _probe(mode: str, **env) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env}, check=True)
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")
def test_freed_memory_is_reused_instead_of_faulted_in_again():
    default, retained = _probe("default"), _probe("retain")
    assert not default["retained"] and retained["retained"]
    assert min(default["faults"]) > 1000  # 16 x 32 x 56 x 56 floats = 6.4 MiB per activation, mapped afresh
    assert max(retained["faults"]) < 100


def test_the_users_malloc_settings_are_left_alone():
    assert not _probe("retain", MALLOC_TRIM_THRESHOLD_="131072")["retained"]
