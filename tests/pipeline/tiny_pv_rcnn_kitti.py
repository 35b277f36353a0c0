# Test-only: mmdet3d's PV-RCNN (KITTI 3-class) shrunk to x 0..25.6 m, y +-12.8 m, 0.2 x 0.2 x 0.1 m voxels
# (sparse grid 41 x 128 x 128), 128 keypoints, a 1+1-layer BEV backbone and at most 16 proposals, so that a
# whole dm3d run (calibrate .. evaluate) over it takes about a minute on 2 CPU cores. Random weights.
_base_ = ['mmdet3d::pv_rcnn/pv_rcnn_8xb2-80e_kitti-3d-3class.py']
point_cloud_range = [0, -12.8, -3, 25.6, 12.8, 1]
voxel_size = [0.2, 0.2, 0.1]
model = dict(
    data_preprocessor=dict(voxel_layer=dict(point_cloud_range=point_cloud_range, voxel_size=voxel_size,
                                            max_voxels=(6000, 6000))),
    middle_encoder=dict(sparse_shape=[41, 128, 128]),
    points_encoder=dict(num_keypoints=128, voxel_size=voxel_size, point_cloud_range=point_cloud_range),
    backbone=dict(layer_nums=[1, 1], out_channels=[16, 32]),
    neck=dict(in_channels=[16, 32], out_channels=[16, 16]),
    rpn_head=dict(
        in_channels=32, feat_channels=32,
        anchor_generator=dict(ranges=[[0, -12.8, -0.6, 25.6, 12.8, -0.6], [0, -12.8, -0.6, 25.6, 12.8, -0.6],
                                      [0, -12.8, -1.78, 25.6, 12.8, -1.78]])),
    test_cfg=dict(rpn=dict(nms_pre=200, nms_post=16, max_num=16)))
# (the zoo config's test pipeline keeps points outside this range: voxelisation drops them)
