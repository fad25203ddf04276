"""Normalisation of social-media Indonesian."""

from twisted.trial.unittest import SynchronousTestCase

from gateway.triage import load_engine
from gateway.triage.normalise import Normaliser, squeeze, squeeze_phrase


class SqueezeTests(SynchronousTestCase):
    def test_repeated_letters(self):
        self.assertEqual(squeeze("tolooong"), "tolong")
        self.assertEqual(squeeze("kebakaraaan"), "kebakaran")
        self.assertEqual(squeeze("sangatta"), squeeze("sanggata"))

    def test_digits_kept(self):
        self.assertEqual(squeeze("2000"), "2000")

    def test_phrase(self):
        self.assertEqual(squeeze_phrase("Kebakaran  HUTAN!"), ("kebakaran", "hutan"))


class NormaliserTests(SynchronousTestCase):
    def setUp(self):
        self.normalise = load_engine().normalise

    def words(self, text):
        return self.normalise(text).tokens

    def test_case_and_punctuation(self):
        self.assertEqual(self.words("BANJIR!!! di, Sangatta."), ("banjir", "di", "sangata"))

    def test_abbreviations(self):
        self.assertEqual(self.words("tlg yg dgn sy jln dkt"), ("tolong", "yang", "dengan", "saya", "jalan", "dekat"))

    def test_slang_and_misspellings(self):
        # Canonical words are squeezed like everything else: "kecelakaan" is "kecelakan".
        self.assertEqual(self.words("kbakaran bnjir laka ambulan"), ("kebakaran", "banjir", "kecelakan", "ambulans"))
        self.assertEqual(self.words("kbakaran bnjir laka ambulan"), self.words("kebakaran banjir kecelakaan ambulans"))

    def test_one_edit_corrected(self):
        self.assertEqual(self.words("kebakarn tenggelem kecelakan"), self.words("kebakaran tenggelam kecelakaan"))

    def test_vowelless_skeleton(self):
        self.assertEqual(self.words("kbkrn"), ("kebakaran",))

    def test_banjar_words(self):
        self.assertEqual(self.words("banyu kada ulun kawa"), ("air", "tidak", "saya", "bisa"))

    def test_english_words(self):
        self.assertEqual(self.words("help fire flood accident trapped"),
                         self.words("tolong kebakaran banjir kecelakaan terjebak"))

    def test_emoji_are_signals(self):
        self.assertEqual(self.words("🔥 🆘 🚑"), ("api", "sos", "ambulans"))

    def test_reduplication_and_suffix(self):
        self.assertEqual(self.words("anak2 apinya"), ("anak", "anak", "api"))

    def test_glued_preposition(self):
        self.assertEqual(self.words("dibengalon"), ("di", "bengalon"))

    def test_shout(self):
        self.assertTrue(self.normalise("tolooong").shout)
        self.assertTrue(self.normalise("tolong!!").shout)
        self.assertTrue(self.normalise("TOLONG KAMI").shout)
        self.assertFalse(self.normalise("tolong diperbaiki").shout)
        self.assertIn("tolong", self.normalise("tolooong").elongated)

    def test_question(self):
        self.assertTrue(self.normalise("kapan cair?").question)

    def test_known_words_not_corrected(self):
        self.assertEqual(self.words("banjar"), ("banjar",))

    def test_ambiguous_correction_refused(self):
        normalise = Normaliser({}, {}, vocabulary=["kebakaran", "kebakaram"])
        self.assertEqual(normalise("kebakaraq").tokens, ("kebakaraq",))

    def test_odd_input(self):
        self.assertEqual(self.normalise("").tokens, ())
        self.assertEqual(self.normalise(None).tokens, ())
        self.assertEqual(self.normalise("\x00\ud800").tokens, ())
