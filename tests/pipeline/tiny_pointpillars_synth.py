# Test-only: pointpillars_synth shrunk to a 25.6 m x 25.6 m range, 0.4 m pillars and 8-16 channels so that
# pipeline tests run in seconds on 2 CPU cores. Random weights (the tests check plumbing, not accuracy).
_base_ = ['../../conf/detector/mmdet3d/pointpillars_synth.py']
point_cloud_range = [0, -12.8, -3, 25.6, 12.8, 1]
voxel_size = [0.4, 0.4, 4]
model = dict(
    data_preprocessor=dict(voxel_layer=dict(point_cloud_range=point_cloud_range, voxel_size=voxel_size,
                                            max_voxels=(4000, 4000))),
    voxel_encoder=dict(feat_channels=[8], voxel_size=voxel_size, point_cloud_range=point_cloud_range),
    middle_encoder=dict(in_channels=8, output_shape=[64, 64]),
    backbone=dict(in_channels=8, layer_nums=[1, 1, 1], out_channels=[8, 8, 16]),
    neck=dict(in_channels=[8, 8, 16], out_channels=[8, 8, 8]),
    bbox_head=dict(
        in_channels=24, feat_channels=24,
        anchor_generator=dict(ranges=[[0, -12.8, -0.6, 25.6, 12.8, -0.6], [0, -12.8, -0.6, 25.6, 12.8, -0.6],
                                      [0, -12.8, -1.78, 25.6, 12.8, -1.78]])))
test_pipeline = [
    dict(type='LoadPointsFromFile', coord_type='LIDAR', load_dim=4, use_dim=4),
    dict(type='PointsRangeFilter', point_cloud_range=point_cloud_range),
    dict(type='Pack3DDetInputs', keys=['points'])
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
