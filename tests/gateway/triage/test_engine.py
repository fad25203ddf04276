"""The triage decision: categories, context rules that promote and demote, locations."""

from twisted.trial.unittest import SynchronousTestCase

from gateway.message import EMERGENCY, HIGH, LOW, NORMAL, Location, Message
from gateway.triage import load_engine


class DecisionTests(SynchronousTestCase):
    @classmethod
    def setUpClass(cls):
        cls.engine = load_engine()

    def triage(self, text):
        return self.engine.classify_text(text)

    def assertEmergency(self, text, category):
        result = self.triage(text)
        self.assertEqual((result.priority, result.category), (EMERGENCY, category), (text, result.reasons))
        return result

    def assertNotEmergency(self, text, category=None):
        result = self.triage(text)
        self.assertNotEqual(result.priority, EMERGENCY, (text, result.reasons))
        if category is not None:
            self.assertEqual(result.category, category, (text, result.reasons))
        return result

    def test_categories(self):
        cases = {
            "kebakaran rumah di teluk lingga": "fire",
            "karhutla dekat taman nasional kutai, api merambat": "fire",
            "banjir masuk rumah setinggi dada": "flood",
            "longsor, dua orang tertimbun": "landslide",
            "gempa kuat, rumah roboh": "disaster",
            "bapak saya pingsan tidak sadar": "medical",
            "tabrakan motor dan truk di jalan poros": "traffic_accident",
            "ada perampokan di toko emas": "crime",
            "anak tenggelam di sungai": "drowning",
            "warga diterkam buaya di sungai sangatta": "animal_attack",
            "gas bocor di rumah makan, bau gas menyengat": "hazard",
            "anak saya hilang di pasar sejak tadi pagi": "missing_person",
            "SOS kami butuh pertolongan": "other_emergency",
        }
        for text, category in cases.items():
            self.assertEmergency(text, category)

    def test_tolong_alone_is_please(self):
        result = self.assertNotEmergency("tolong diperbaiki jalannya", "complaint")
        self.assertEqual(result.priority, NORMAL)

    def test_past_and_resolved(self):
        self.assertNotEmergency("tahun lalu rumah saya kebakaran", "complaint")
        result = self.assertNotEmergency("apinya sudah padam")
        self.assertIn("demote.resolved:sudah padam", result.reasons)

    def test_prevention_and_requests(self):
        for text in ("rawan kecelakaan di tikungan itu", "kalau hujan pasti banjir di sini",
                     "pohon di depan rumah mohon dipangkas"):
            self.assertNotEmergency(text)

    def test_figurative(self):
        self.assertEqual(self.assertNotEmergency("banjir diskon akhir tahun").category, "spam")
        for text in ("darurat sampah di pasar", "ini pembunuhan karakter", "para pejabat kebakaran jenggot"):
            result = self.assertNotEmergency(text)
            self.assertTrue(any(r.startswith("mask.") for r in result.reasons), result.reasons)

    def test_elsewhere_films_and_drills(self):
        for text in ("simulasi kebakaran di kantor camat", "nonton film tsunami", "berita kebakaran di samarinda"):
            result = self.assertNotEmergency(text, "information")
            self.assertEqual(result.priority, LOW)

    def test_aid_questions(self):
        self.assertNotEmergency("bantuan korban banjir kapan cair", "complaint")

    def test_promotion_overrides_a_past_mention(self):
        self.assertEmergency("tahun lalu banjir, sekarang banjir lagi, warga terjebak di atap", "flood")

    def test_promoters_are_reasons(self):
        result = self.assertEmergency("kebakaran! ada orang terjebak, cepat", "fire")
        self.assertIn("promote.victim:terjebak", result.reasons)
        self.assertIn("promote.urgent:cepat", result.reasons)
        self.assertIn("fire:kebakaran", result.reasons)
        self.assertIn("decision:emergency", result.reasons)
        self.assertGreater(result.confidence, 0.7)

    def test_social_media_spelling(self):
        self.assertEmergency("tolooong kebakaraaan dkt rmh sy!!!", "fire")
        self.assertEmergency("bnjir masuk rmh, banyu sdh sepinggang, ulun kada kawa keluar", "flood")
        self.assertEmergency("help! accident on the road, people trapped", "traffic_accident")
        self.assertEmergency("🔥🔥 rumah tetangga 🆘", "fire")

    def test_weak_evidence_is_high(self):
        result = self.triage("ada buaya di pinggir sungai dekat tempat anak mandi")
        self.assertEqual((result.priority, result.category), (HIGH, "animal_attack"))

    def test_shouted_cry_is_high(self):
        result = self.triage("TOLOOONG!!!")
        self.assertEqual((result.priority, result.category), (HIGH, "other_emergency"))

    def test_routing_categories(self):
        self.assertEqual(self.triage("terima kasih pak camat, pelayanannya bagus sekali").category, "appreciation")
        self.assertEqual(self.triage("slot gacor maxwin deposit 10rb").category, "spam")
        self.assertEqual(self.triage("mau tanya jadwal pelayanan KTP").category, "information")
        self.assertEqual(self.triage("usul dibangun taman bermain").category, "aspiration")
        self.assertEqual(self.triage("jalan rusak berlubang").category, "complaint")
        self.assertEqual(self.triage("halo").category, "complaint")

    def test_non_emergency_priorities(self):
        self.assertEqual(self.triage("jalan rusak berlubang").priority, NORMAL)
        self.assertEqual(self.triage("slot gacor maxwin").priority, LOW)


class LocationTests(SynchronousTestCase):
    @classmethod
    def setUpClass(cls):
        cls.engine = load_engine()

    def location(self, text):
        return self.engine.classify_text(text).location

    def test_kecamatan_with_spelling_variants(self):
        for text in ("banjir di sanggata utara", "banjir di sangata utara", "banjir di SANGATTA UTARA"):
            location = self.location(text)
            self.assertEqual(location.name, "Sangatta Utara")
            self.assertEqual(location.source, "gazetteer")
            self.assertAlmostEqual(location.lat, 0.51, delta=0.2)
            self.assertAlmostEqual(location.lon, 117.56, delta=0.2)
        self.assertEqual(self.location("kebakaran di bengalon").name, "Bengalon")

    def test_all_eighteen_kecamatan(self):
        names = [p.name for p in self.engine.gazetteer.places if p.kind == "kecamatan"]
        self.assertEqual(sorted(names), sorted([
            "Sangatta Utara", "Sangatta Selatan", "Bengalon", "Muara Wahau", "Kongbeng", "Telen",
            "Muara Ancalong", "Busang", "Long Mesangat", "Muara Bengkal", "Batu Ampar", "Rantau Pulung",
            "Kaubun", "Karangan", "Kaliorang", "Sangkulirang", "Sandaran", "Teluk Pandan"]))

    def test_most_specific_place_wins(self):
        self.assertEqual(self.location("kebakaran di teluk lingga sangatta utara").name, "Teluk Lingga, Sangatta Utara")
        self.assertEqual(self.location("tabrakan di jln yos sudarso sangatta").name,
                         "Jalan Yos Sudarso, Sangatta Utara")
        self.assertEqual(self.location("pingsan di depan rsud kudungga").name, "RSUD Kudungga, Sangatta Utara")

    def test_village_takes_its_district_point(self):
        location = self.location("banjir di singa gembara")
        self.assertEqual(location.name, "Singa Gembara, Sangatta Utara")
        self.assertEqual((location.lat, location.lon), (0.51, 117.56))

    def test_place_without_coordinates(self):
        location = self.location("kecelakaan di jalan poros sangatta bontang")
        self.assertEqual(location.name, "Jalan Poros Sangatta Bontang")
        self.assertIsNone(location.lat)
        self.assertIsNone(location.lon)

    def test_ambiguous_name_needs_context(self):
        self.assertIsNone(self.location("karangan bunga untuk pak camat"))
        self.assertEqual(self.location("kecelakaan di karangan").name, "Karangan")

    def test_no_place(self):
        self.assertIsNone(self.location("kebakaran!"))

    def test_channel_coordinates_win(self):
        here = Location(lat=0.6, lon=117.4, name=None, source="channel")
        message = Message(channel_id="wa", channel_type="whatsapp", sender="1", text="banjir di bengalon",
                          location=here)
        self.assertIs(self.engine.classify(message).location, here)
