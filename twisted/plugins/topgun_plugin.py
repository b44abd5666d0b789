from twisted.application.service import ServiceMaker

topgun = ServiceMaker(
    "topgun", "topgun.tap", "A TopGun-compatible authenticated sync server.", "topgun"
)
