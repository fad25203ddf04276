from twisted.application.service import ServiceMaker

siaga = ServiceMaker("siaga", "gateway.tap", "Siaga: citizens' messages to LAPOR! and 112.", "siaga")
