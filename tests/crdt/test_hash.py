"""FNV-1a, mix/combine and hashObject against the TypeScript core's vectors."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from tests._vectors import load_json
from topgun.crdt import _js
from topgun.crdt.hash import (
    SegmentCache,
    apply_segment,
    combine,
    fnv1a,
    fnv1a_extend,
    hash_object,
    merkle_path,
    mix,
    segment_table,
    unmix,
)

u32 = st.integers(min_value=0, max_value=2**32 - 1)
latin1 = st.text(st.characters(max_codepoint=255), max_size=40)
# Surrogate code points included: JS strings may hold lone surrogates.
any_text = st.text(st.characters(blacklist_categories=()), max_size=40)


def _reference_fnv1a(s: str) -> int:
    """FNV-1a written straight from the definition, one UTF-16 unit at a time."""
    data = s.encode("utf-16-be", "surrogatepass")
    h = 0x811C9DC5
    for i in range(0, len(data), 2):
        h ^= (data[i] << 8) | data[i + 1]
        h = (h * 0x01000193) % 2**32
    return h


class HashVectorTests(SynchronousTestCase):
    def test_hash_string(self) -> None:
        """fnv1a, merkle_path and the partition id equal every hashString vector."""
        vectors = load_json("crdt/hash.json")
        for case in vectors["hashString"]:
            with self.subTest(case["id"]):
                self.assertEqual(fnv1a(case["input"]), case["hashString"])
                self.assertEqual(merkle_path(case["input"]), case["merkle_path_hex8"])
                self.assertEqual(merkle_path(case["input"])[:3], case["merkle_bucket_depth3"])
                self.assertEqual(
                    fnv1a(case["input"]) % vectors["partition_count"], case["partition_id"]
                )

    def test_combine(self) -> None:
        """combine equals every combineHashes vector, including the empty list."""
        for case in load_json("crdt/hash.json")["combineHashes"]:
            with self.subTest(case["id"]):
                self.assertEqual(combine(case["inputs"]), case["combineHashes"])

    def test_mix(self) -> None:
        """mix equals the vectors' fmix32 values and unmix inverts it."""
        for case in load_json("crdt/hash.json")["mix"]:
            self.assertEqual(mix(case["input"]), case["mix"])
            self.assertEqual(unmix(case["mix"]), case["input"])

    def test_hash_object(self) -> None:
        """hash_object builds the vectors' canonical JSON and hashes it alike."""
        for case in load_json("crdt/hash.json")["hashObject"]:
            self.assertEqual(_js.stringify_sorted(case["object"]), case["canonical_json"])
            self.assertEqual(hash_object(case["object"]), case["hashObject"])


class HashUnitTests(SynchronousTestCase):
    def test_known_values(self) -> None:
        """The empty string hashes to the offset basis and ASCII matches a hand value."""
        self.assertEqual(fnv1a(""), 0x811C9DC5)
        self.assertEqual(fnv1a("hello"), 1335831723)
        self.assertEqual(combine([]), 0)
        self.assertEqual(mix(0), 0)

    def test_non_bmp_is_two_units(self) -> None:
        """A character outside the BMP hashes as its surrogate pair."""
        self.assertEqual(fnv1a("\U0001f600"), fnv1a("\ud83d\ude00"))
        self.assertEqual(fnv1a("\U0001f600"), 3409036472)

    @given(any_text)
    def test_matches_reference(self, s: str) -> None:
        """fnv1a equals a unit-by-unit reference for any string."""
        self.assertEqual(fnv1a(s), _reference_fnv1a(s))

    @given(any_text, any_text)
    def test_extend(self, a: str, b: str) -> None:
        """Hashing a then continuing over b equals hashing a + b."""
        self.assertEqual(fnv1a_extend(fnv1a(a), b), fnv1a(a + b))

    @given(u32, latin1)
    def test_segment_table(self, h: int, segment: str) -> None:
        """A segment table applies a string in one step exactly as plain hashing does."""
        table = segment_table(segment)
        self.assertEqual(apply_segment(h, table), fnv1a_extend(h, segment))
        # The second application reads the slot the first one filled.
        self.assertEqual(apply_segment(h, table), fnv1a_extend(h, segment))

    @given(u32, st.lists(any_text, max_size=12))
    def test_segment_cache(self, h: int, segments: list[str]) -> None:
        """A segment cache hashes like plain hashing and never holds more than its bound."""
        cache = SegmentCache(3)
        for segment in segments:
            self.assertEqual(cache.extend(h, segment), fnv1a_extend(h, segment))
            self.assertLessEqual(len(cache), 3)

    def test_segment_cache_bound(self) -> None:
        """A segment cache refuses a bound below one."""
        self.assertRaises(ValueError, SegmentCache, 0)

    @given(st.lists(u32, max_size=8), st.randoms())
    def test_combine_order_independent(self, hashes: list[int], rnd: object) -> None:
        """combine gives the same value for any order of its inputs."""
        shuffled = list(hashes)
        rnd.shuffle(shuffled)  # type: ignore[attr-defined]
        self.assertEqual(combine(shuffled), combine(hashes))

    @given(u32)
    def test_unmix(self, h: int) -> None:
        """unmix inverts mix on every 32-bit value."""
        self.assertEqual(unmix(mix(h)), h)
