#!/usr/bin/env python3
"""Deterministic generator of test file trees for the VM tests.

Usage: gen-tree.py OUTDIR --profile {basic,small,compressible,bench-seq,bench-small,bench-lz4} [--seed N]

Writes the tree to OUTDIR and its manifest to OUTDIR.manifest. The same
profile and seed give byte-identical trees and manifests on any machine and
any Python 3 (all randomness comes from SHAKE-256, not from `random`).

Profiles:
  basic  ~56 MB over ~600 files: directories nested 6 levels deep, an empty
         file, an empty directory, 4 MiB and 6 MiB files, sizes around page
         boundaries (4095/4096/4097), tiny files, compressible text files and
         two relative symlinks.
  small  ~1 MB over a few files (tiny, page-sized, compressible, 768 KiB),
         an empty file and a symlink, for quick scenarios.
  compressible ~39 MB over ~340 files that compress well, for compressed
               images: text files of every size class, all-zero files,
               files alternating 48 KiB of text and 48 KiB of random bytes
               (compressed and stored extents in one file), 4 MiB and
               3 MiB+123 text files, an empty file and a symlink.
  bench-seq    one 256 MiB file of random (incompressible) bytes, for the
               sequential-read benchmark (tests/bench).
  bench-small  2,000 random files of 30-34 KiB (~62.5 MiB) in 20
               directories of 100, for the small-file benchmark.
  bench-lz4    a container root file system to compress: 577 files, ~383
               MiB (seed 1: 401,156,901 bytes), mostly binary-like data
               that lz4 halves (96 libraries of 1-4 MiB, 240 programs of
               16-512 KiB), 40 already-compressed (random) files of 1-3
               MiB, 200 text files and 8 MiB of zeros; under mkfs.erofs
               -zlz4 a ~257 MiB blob, for the bench's lz4 case and
               vm_lz4_resume.

Manifest format (one entry per line, sorted bytewise by path, no comments):
  <sha256 hex>  <relpath>          regular file (exactly `sha256sum` output)
  symlink <relpath> <target>       symbolic link and its verbatim target
  dir <relpath>                    directory (every one, empty or not)
Paths are relative to OUTDIR, without a leading "./", and only ever contain
[A-Za-z0-9._/-], so every consumer may split lines on whitespace.

Idempotent: an existing OUTDIR that has an OUTDIR.manifest next to it (i.e.
one this script made) is replaced; any other non-empty OUTDIR is refused.
All mtimes are set to a fixed epoch so that images built from the tree are
reproducible.
"""

import argparse
import hashlib
import os
import shutil
import sys

FIXED_MTIME = 1_700_000_000
KiB = 1024
MiB = 1024 * 1024


class Rng:
    """Deterministic byte stream from SHAKE-256(seed, stream name)."""

    def __init__(self, seed, name):
        self._key = f"gen-tree:{seed}:{name}".encode()
        self._buf = b""
        self._pos = 0
        self._blocks = 0

    def _take(self, n):
        while self._pos + n > len(self._buf):
            self._blocks += 1
            self._buf = self._buf[self._pos:] + hashlib.shake_256(
                self._key + b":%d" % self._blocks).digest(4096)
            self._pos = 0
        out = self._buf[self._pos:self._pos + n]
        self._pos += n
        return out

    def below(self, n):
        """Uniform integer in [0, n) (64-bit modulo: bias irrelevant here)."""
        return int.from_bytes(self._take(8), "little") % n

    def between(self, lo, hi):
        """Uniform integer in [lo, hi]."""
        return lo + self.below(hi - lo + 1)

    def choice(self, seq):
        return seq[self.below(len(seq))]


def random_bytes(seed, relpath, size):
    return hashlib.shake_256(f"gen-tree:{seed}:data:{relpath}".encode()).digest(size)


WORDS = ("cache object volume cookie blob fscache erofs request reply open "
         "read close restore worker supervisor daemon kernel page extent "
         "chunk device inode dentry lorem ipsum dolor sit amet").split()


def text_bytes(seed, relpath, size):
    """Compressible text: lines built from a small vocabulary."""
    rng = Rng(seed, "text:" + relpath)
    lines = []
    total = 0
    n = 0
    while total < size:
        words = " ".join(rng.choice(WORDS) for _ in range(rng.between(4, 12)))
        line = f"{n:06d} {words}\n"
        lines.append(line)
        total += len(line)
        n += 1
    return "".join(lines).encode()[:size]


def zero_bytes(seed, relpath, size):
    return bytes(size)


def binary_bytes(seed, relpath, size):
    """Compresses about 2:1 under lz4, like executables and libraries: runs
    of 64 random bytes, each followed by 64 bytes that repeat an earlier
    stretch of the file (lz4 finds the match). Fast: no per-byte Python."""
    noise = random_bytes(seed, relpath, size // 2 + 64)
    out = bytearray()
    for i in range(0, size, 128):
        j = i // 2
        out += noise[j:j + 64]
        back = (j // 7) & ~63
        out += noise[back:back + 64]
    return bytes(out[:size])


def mixed_bytes(seed, relpath, size):
    """48 KiB of text, 48 KiB of random bytes, and so on."""
    text = text_bytes(seed, relpath, size)
    noise = random_bytes(seed, relpath, size)
    step = 48 * KiB
    return b"".join((text if (i // step) % 2 == 0 else noise)[i:i + step]
                    for i in range(0, size, step))


DATA_KINDS = {"random": random_bytes, "text": text_bytes, "zeros": zero_bytes,
              "mixed": mixed_bytes, "binary": binary_bytes}


class Tree:
    def __init__(self, seed):
        self.seed = seed
        self.files = {}     # relpath -> (kind, size, mode); kind: a DATA_KINDS key
        self.symlinks = {}  # relpath -> target
        self.dirs = set()

    def add_dir(self, relpath):
        parts = relpath.split("/")
        for i in range(1, len(parts) + 1):
            self.dirs.add("/".join(parts[:i]))

    def add_file(self, relpath, size, kind="random", mode=0o644):
        assert relpath not in self.files and relpath not in self.symlinks
        if "/" in relpath:
            self.add_dir(relpath.rsplit("/", 1)[0])
        self.files[relpath] = (kind, size, mode)

    def add_symlink(self, relpath, target_relpath):
        assert target_relpath in self.files, target_relpath
        if "/" in relpath:
            self.add_dir(relpath.rsplit("/", 1)[0])
        start = os.path.dirname(relpath) or "."
        self.symlinks[relpath] = os.path.relpath(target_relpath, start)

    def total_bytes(self):
        return sum(size for _, size, _ in self.files.values())


def profile_small(tree):
    tree.add_file("hello.txt", 13, kind="text")
    tree.add_file("empty", 0)
    tree.add_file("etc/page-4096.bin", 4096)
    tree.add_file("etc/notes.txt", 20_000, kind="text")
    tree.add_file("data/odd-size.bin", 123_457)
    tree.add_file("data/nested/deep/blob-768k.bin", 768 * KiB + 5)
    tree.add_file("data/nested/run.sh", 300, kind="text", mode=0o755)
    tree.add_symlink("link-to-blob", "data/nested/deep/blob-768k.bin")


def pick_size(rng):
    """Size distribution of ordinary files in the basic profile."""
    r = rng.below(100)
    if r < 15:
        return rng.between(1, 64)                  # tiny, inline candidates
    if r < 42:
        return rng.between(65, 4095)               # sub-page
    if r < 50:
        return 4096 * rng.between(1, 4)            # page multiples
    if r < 75:
        return rng.between(4097, 64 * KiB)         # a few pages
    if r < 95:
        return rng.between(64 * KiB + 1, 256 * KiB)
    return rng.between(256 * KiB + 1, 1 * MiB)


def profile_basic(tree):
    rng = Rng(tree.seed, "structure")

    # Directory skeleton: 6 top-level dirs, 2-4 children each, 0-3
    # grandchildren each, plus one deliberately deep chain.
    dirs = []
    for t in range(6):
        top = f"d{t}"
        dirs.append(top)
        for c in range(rng.between(2, 4)):
            child = f"{top}/sub{c}"
            dirs.append(child)
            for g in range(rng.below(4)):
                dirs.append(f"{child}/leaf{g}")
    deep = "deep/a/b/c/d/e"
    dirs.append(deep)
    for d in dirs:
        tree.add_dir(d)
    tree.add_dir("empty-dir")

    # Special cases the readers must get right.
    tree.add_file("etc/empty.conf", 0)
    tree.add_file("etc/one-byte", 1)
    tree.add_file("etc/page-minus-one", 4095)
    tree.add_file("etc/page-exact", 4096)
    tree.add_file("etc/page-plus-one", 4097)
    tree.add_file("var/lib/big/blob-6m.bin", 6 * MiB + 123)
    tree.add_file("var/lib/big/blob-4m-exact.bin", 4 * MiB)
    tree.add_file(f"{deep}/leaf.bin", 10_000)
    tree.add_file("usr/bin/tool.sh", 2_000, kind="text", mode=0o755)
    for i in range(4):
        tree.add_file(f"usr/share/doc/manual-{i}.txt",
                      rng.between(100 * KiB, 400 * KiB), kind="text")
    tree.add_symlink("usr/bin/link-to-big", "var/lib/big/blob-6m.bin")
    tree.add_symlink("etc/alias.conf", "etc/empty.conf")

    # Ordinary files spread over the skeleton.
    for i in range(560):
        d = rng.choice(dirs)
        kind = "text" if rng.below(20) == 0 else "random"
        tree.add_file(f"{d}/f{i:04d}.{'txt' if kind == 'text' else 'bin'}",
                      pick_size(rng), kind=kind)

    # Top up to the promised volume whatever the seed drew.
    i = 0
    while tree.total_bytes() < 52 * MiB:
        tree.add_file(f"var/lib/fill/fill-{i:03d}.bin",
                      rng.between(1 * MiB, 2 * MiB))
        i += 1


def profile_compressible(tree):
    rng = Rng(tree.seed, "compressible")
    tree.add_file("empty", 0)
    tree.add_file("text/large-4m.txt", 4 * MiB, kind="text")
    tree.add_file("text/large-3m-odd.txt", 3 * MiB + 123, kind="text")
    tree.add_file("zeros/zero-2m.bin", 2 * MiB + 1, kind="zeros")
    tree.add_file("zeros/zero-page.bin", 4096, kind="zeros")
    for i in range(8):
        tree.add_file(f"mixed/mixed-{i}.bin", rng.between(200 * KiB, 1 * MiB), kind="mixed")
    dirs = [f"tree/t{a}/u{b}" for a in range(4) for b in range(3)]
    for i in range(330):
        kind = ("text", "text", "text", "zeros", "mixed", "random")[rng.below(6)]
        tree.add_file(f"{rng.choice(dirs)}/c{i:04d}.{kind}", pick_size(rng), kind=kind)
    tree.add_symlink("text/latest", "text/large-4m.txt")


def profile_bench_seq(tree):
    tree.add_file("seq/big-256m.bin", 256 * MiB)


def profile_bench_lz4(tree):
    """A container root file system to compress: mostly binary-like files
    (about 2:1), already-compressed ones (random), some text and zeros."""
    rng = Rng(tree.seed, "bench-lz4")
    for i in range(96):
        tree.add_file(f"usr/lib/lib{i:03d}.so", rng.between(1 * MiB, 4 * MiB), kind="binary")
    for i in range(240):
        tree.add_file(f"usr/bin/b{i:03d}", rng.between(16 * KiB, 512 * KiB), kind="binary", mode=0o755)
    for i in range(40):
        tree.add_file(f"usr/share/data/a{i:02d}.gz", rng.between(1 * MiB, 3 * MiB))
    for i in range(200):
        tree.add_file(f"usr/share/doc/d{i // 50}/r{i:03d}.txt", rng.between(1 * KiB, 64 * KiB), kind="text")
    tree.add_file("var/lib/sparse-8m.img", 8 * MiB, kind="zeros")


def profile_bench_small(tree):
    rng = Rng(tree.seed, "bench-small")
    for i in range(2000):
        tree.add_file(f"small/d{i // 100:02d}/f{i:04d}.bin",
                      rng.between(30 * KiB, 34 * KiB))


PROFILES = {"basic": profile_basic, "small": profile_small,
            "compressible": profile_compressible,
            "bench-seq": profile_bench_seq, "bench-small": profile_bench_small,
            "bench-lz4": profile_bench_lz4}


def prepare_outdir(outdir, manifest):
    if os.path.lexists(outdir):
        if not os.path.isdir(outdir) or os.path.islink(outdir):
            sys.exit(f"gen-tree: {outdir} exists and is not a directory")
        if os.listdir(outdir) and not os.path.exists(manifest):
            sys.exit(f"gen-tree: {outdir} is not empty and has no {manifest}: "
                     "refusing to replace a directory this script did not make")
        shutil.rmtree(outdir)
    # An empty manifest marks OUTDIR as ours while it is being written, so a
    # run killed halfway is still replaced by the next one.
    open(manifest, "w").close()
    os.makedirs(outdir)


def write_tree(tree, outdir, manifest):
    entries = []
    for d in sorted(tree.dirs):
        os.makedirs(os.path.join(outdir, d), exist_ok=True)
        entries.append((d, f"dir {d}"))
    for rel, (kind, size, mode) in sorted(tree.files.items()):
        data = DATA_KINDS[kind](tree.seed, rel, size)
        path = os.path.join(outdir, rel)
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, mode)
        entries.append((rel, f"{hashlib.sha256(data).hexdigest()}  {rel}"))
    for rel, target in sorted(tree.symlinks.items()):
        os.symlink(target, os.path.join(outdir, rel))
        entries.append((rel, f"symlink {rel} {target}"))

    # Fixed times, deepest first so a parent's mtime is not bumped afterwards.
    paths = [os.path.join(outdir, rel) for rel, _ in entries]
    for p in sorted(paths, key=lambda p: p.count("/"), reverse=True):
        os.utime(p, (FIXED_MTIME, FIXED_MTIME), follow_symlinks=False)
        if os.path.isdir(p) and not os.path.islink(p):
            os.chmod(p, 0o755)
    os.chmod(outdir, 0o755)
    os.utime(outdir, (FIXED_MTIME, FIXED_MTIME))

    entries.sort(key=lambda e: e[0].encode())
    tmp = manifest + ".tmp"
    with open(tmp, "w") as f:
        f.write("".join(line + "\n" for _, line in entries))
    os.rename(tmp, manifest)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("outdir")
    ap.add_argument("--profile", required=True, choices=sorted(PROFILES))
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    outdir = os.path.abspath(args.outdir.rstrip("/") or "/")
    manifest = outdir + ".manifest"
    tree = Tree(args.seed)
    PROFILES[args.profile](tree)
    prepare_outdir(outdir, manifest)
    write_tree(tree, outdir, manifest)
    print(f"gen-tree: {args.profile} seed={args.seed}: {len(tree.files)} files, "
          f"{len(tree.symlinks)} symlinks, {len(tree.dirs)} dirs, "
          f"{tree.total_bytes()} bytes -> {outdir}", file=sys.stderr)


if __name__ == "__main__":
    main()
