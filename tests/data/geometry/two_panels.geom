; Two 4 x 3 panels of 100 um pixels, hand-written for tests/test_geometry_files.py.
; CrystFEL's lab frame: +z along the beam, +y up, x completing a right-handed frame.

photon_energy = 9500 eV
adu_per_eV = 0.0001
clen = 0.1
res = 10000          ; pixels per metre: 100 um pixels
dim0 = %
dim1 = ss
dim2 = fs
data = /data/data

rigid_group_all = p0,p1
rigid_group_collection_det = all

; p0: square to the beam, 1 mm further than clen
p0/min_fs = 0
p0/max_fs = 3
p0/min_ss = 0
p0/max_ss = 2
p0/fs = -x
p0/ss = -1.0000y
p0/corner_x = 10
p0/corner_y = 5
p0/coffset = 0.001

; p1: tilted (its fast axis has a z component); the default below reaches p1 only
coffset = 0.0
p1/min_fs = 4
p1/max_fs = 7
p1/min_ss = 0
p1/max_ss = 2
p1/fs = +0.8y +0.6z
p1/ss = -x
p1/corner_x = -20
p1/corner_y = 30
p1/no_index = 0

badregionA/min_x = -1
badregionA/max_x = 1
badregionA/min_y = -1
badregionA/max_y = 1
