# PointPillars sized for the synthetic KITTI-format benchmark (dm3d_exp.data) on CPU: mmdet3d's
# pointpillars_hv_secfpn_8xb6-160e_kitti-3d-3class.py with 0.2 m pillars (256 x 384 grid over the shared
# range) and channels halved (pillar 32, backbone 32/64/128, neck 3 x 64): ~1.2 M parameters, 4.1 GMACs.
# Head: _base_anchor3d_head_synth.py; data, pipelines, metric and schedule: _base_synth_kitti.py.
_base_ = ['./_base_synth_kitti.py', './_base_anchor3d_head_synth.py']
point_cloud_range = [0, -38.4, -3, 51.2, 38.4, 1]
voxel_size = [0.2, 0.2, 4]
grid_xy = [256, 384]  # (x, y) pillars; divisible by 8 (three stride-2 stages)

model = dict(
    type='VoxelNet',
    data_preprocessor=dict(
        type='Det3DDataPreprocessor',
        voxel=True,
        voxel_layer=dict(
            max_num_points=32,
            point_cloud_range=point_cloud_range,
            voxel_size=voxel_size,
            max_voxels=(16000, 40000))),
    voxel_encoder=dict(
        type='PillarFeatureNet',
        in_channels=4,
        feat_channels=[32],
        with_distance=False,
        voxel_size=voxel_size,
        point_cloud_range=point_cloud_range),
    middle_encoder=dict(type='PointPillarsScatter', in_channels=32, output_shape=[grid_xy[1], grid_xy[0]]),
    backbone=dict(
        type='SECOND',
        in_channels=32,
        layer_nums=[3, 5, 5],
        layer_strides=[2, 2, 2],
        out_channels=[32, 64, 128]),
    neck=dict(
        type='SECONDFPN',
        in_channels=[32, 64, 128],
        upsample_strides=[1, 2, 4],
        out_channels=[64, 64, 64]),
    bbox_head=dict(in_channels=192, feat_channels=192))
