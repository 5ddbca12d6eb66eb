; DECTRIS EIGER2 X 4M: 8 modules (2 x 4) of 1028 x 512 pixels of 75 um,
; full frame 2068 x 2162 pixels (gaps 12 fast, 38 slow), written by hand from the published
; layout (see README.txt).  Distance 200 mm; direct beam at 1100 x 1000 pixels
; (82.5 mm along fast, 75 mm along slow) from the outer corner of frame pixel (0, 0).
; CrystFEL lab frame: +z along the beam, +y up, right-handed; fast runs along -x, slow along -y.

photon_energy = 12398.42
adu_per_photon = 1
clen = 0.2000
res = 13333.333333333334

m0000/min_fs = 0
m0000/max_fs = 1027
m0000/min_ss = 0
m0000/max_ss = 511
m0000/fs = -1.000000x +0.000000y +0.000000z
m0000/ss = +0.000000x -1.000000y +0.000000z
m0000/corner_x = 1100.00
m0000/corner_y = 1000.00

m0001/min_fs = 1040
m0001/max_fs = 2067
m0001/min_ss = 0
m0001/max_ss = 511
m0001/fs = -1.000000x +0.000000y +0.000000z
m0001/ss = +0.000000x -1.000000y +0.000000z
m0001/corner_x = 60.00
m0001/corner_y = 1000.00

m0100/min_fs = 0
m0100/max_fs = 1027
m0100/min_ss = 550
m0100/max_ss = 1061
m0100/fs = -1.000000x +0.000000y +0.000000z
m0100/ss = +0.000000x -1.000000y +0.000000z
m0100/corner_x = 1100.00
m0100/corner_y = 450.00

m0101/min_fs = 1040
m0101/max_fs = 2067
m0101/min_ss = 550
m0101/max_ss = 1061
m0101/fs = -1.000000x +0.000000y +0.000000z
m0101/ss = +0.000000x -1.000000y +0.000000z
m0101/corner_x = 60.00
m0101/corner_y = 450.00

m0200/min_fs = 0
m0200/max_fs = 1027
m0200/min_ss = 1100
m0200/max_ss = 1611
m0200/fs = -1.000000x +0.000000y +0.000000z
m0200/ss = +0.000000x -1.000000y +0.000000z
m0200/corner_x = 1100.00
m0200/corner_y = -100.00

m0201/min_fs = 1040
m0201/max_fs = 2067
m0201/min_ss = 1100
m0201/max_ss = 1611
m0201/fs = -1.000000x +0.000000y +0.000000z
m0201/ss = +0.000000x -1.000000y +0.000000z
m0201/corner_x = 60.00
m0201/corner_y = -100.00

m0300/min_fs = 0
m0300/max_fs = 1027
m0300/min_ss = 1650
m0300/max_ss = 2161
m0300/fs = -1.000000x +0.000000y +0.000000z
m0300/ss = +0.000000x -1.000000y +0.000000z
m0300/corner_x = 1100.00
m0300/corner_y = -650.00

m0301/min_fs = 1040
m0301/max_fs = 2067
m0301/min_ss = 1650
m0301/max_ss = 2161
m0301/fs = -1.000000x +0.000000y +0.000000z
m0301/ss = +0.000000x -1.000000y +0.000000z
m0301/corner_x = 60.00
m0301/corner_y = -650.00
