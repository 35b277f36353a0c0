# SECOND sized for the synthetic KITTI-format benchmark (dm3d_exp.data) on CPU: mmdet3d's
# second_hv_secfpn_8xb6-80e_kitti-3d-3class.py with 0.1 x 0.1 x 0.2 m voxels (sparse grid 21 x 768 x 512 over
# the shared range) through a spconv SparseEncoder (SubMConv3d / SparseConv3d, 16-32-64-64 channels,
# stride 8), a dense SECOND backbone (64/128), SECONDFPN (2 x 64) and the Anchor3DHead shared with
# pointpillars_synth.py (_base_anchor3d_head_synth.py). Data, pipelines, metric and schedule: _base_synth_kitti.py.
_base_ = ['./_base_synth_kitti.py', './_base_sparse_encoder_synth.py', './_base_anchor3d_head_synth.py']
point_cloud_range = [0, -38.4, -3, 51.2, 38.4, 1]

model = dict(
    type='VoxelNet',
    data_preprocessor=dict(
        type='Det3DDataPreprocessor',
        voxel=True,
        voxel_layer=dict(
            max_num_points=5,
            point_cloud_range=point_cloud_range,
            voxel_size={{_base_.voxel_size}},
            max_voxels=(40000, 60000))),
    voxel_encoder=dict(type='HardSimpleVFE', num_features=4),
    middle_encoder={{_base_._sparse_encoder}},
    backbone=dict(
        type='SECOND',
        in_channels=128,
        out_channels=[64, 128],
        layer_nums=[3, 5],
        layer_strides=[1, 2]),
    neck=dict(
        type='SECONDFPN',
        in_channels=[64, 128],
        out_channels=[64, 64],
        upsample_strides=[1, 2]),
    bbox_head=dict(in_channels=128, feat_channels=128))
