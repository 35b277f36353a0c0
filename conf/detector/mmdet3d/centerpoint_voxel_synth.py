# CenterPoint (voxel) sized for the synthetic KITTI-format benchmark (dm3d_exp.data) on CPU: DM3D's headline
# detector. mmdet3d's centerpoint_voxel01_second_secfpn_8xb4-cyclic-20e_nus-3d.py adapted to KITTI-format
# data: 0.1 x 0.1 x 0.2 m voxels (sparse grid 21 x 768 x 512 over the shared range) through a spconv
# SparseEncoder (SubMConv3d / SparseConv3d, 16-32-64-64 channels, stride 8), a dense SECOND backbone
# (64/128) and SECONDFPN back to stride 8 (0.8 m cells), and a velocity-free CenterHead (tasks
# [Pedestrian, Cyclist], [Car]; 32-channel heads). Data, pipelines, metric and schedule: _base_synth_kitti.py.
_base_ = ['./_base_synth_kitti.py', './_base_sparse_encoder_synth.py']
point_cloud_range = [0, -38.4, -3, 51.2, 38.4, 1]
out_size_factor = 8

model = dict(
    type='CenterPoint',
    data_preprocessor=dict(
        type='Det3DDataPreprocessor',
        voxel=True,
        voxel_layer=dict(
            max_num_points=10,
            point_cloud_range=point_cloud_range,
            voxel_size={{_base_.voxel_size}},
            max_voxels=(40000, 60000))),
    pts_voxel_encoder=dict(type='HardSimpleVFE', num_features=4),
    pts_middle_encoder={{_base_._sparse_encoder}},
    pts_backbone=dict(
        type='SECOND',
        in_channels=128,
        out_channels=[64, 128],
        layer_nums=[3, 5],
        layer_strides=[1, 2],
        norm_cfg=dict(type='BN', eps=1e-3, momentum=0.01),
        conv_cfg=dict(type='Conv2d', bias=False)),
    pts_neck=dict(
        type='SECONDFPN',
        in_channels=[64, 128],
        out_channels=[64, 64],
        upsample_strides=[1, 2],
        norm_cfg=dict(type='BN', eps=1e-3, momentum=0.01),
        upsample_cfg=dict(type='deconv', bias=False),
        use_conv_for_no_stride=True),
    pts_bbox_head=dict(
        type='CenterHeadNoVelocity',
        in_channels=128,
        tasks=[
            dict(num_class=2, class_names=['Pedestrian', 'Cyclist']),
            dict(num_class=1, class_names=['Car']),
        ],
        common_heads=dict(reg=(2, 2), height=(1, 2), dim=(3, 2), rot=(2, 2)),
        share_conv_channel=64,
        bbox_coder=dict(
            type='CenterPointBBoxCoder',
            pc_range=point_cloud_range[:2],
            post_center_range=[-10.0, -50.0, -10.0, 61.2, 50.0, 10.0],
            max_num=100,
            score_threshold=0.1,
            out_size_factor=out_size_factor,
            voxel_size={{_base_._voxel_xy}},
            code_size=7),
        separate_head=dict(type='SeparateHead', init_bias=-2.19, final_kernel=3, head_conv=32),
        loss_cls=dict(type='mmdet.GaussianFocalLoss', reduction='mean'),
        loss_bbox=dict(type='mmdet.L1Loss', reduction='mean', loss_weight=0.25),
        norm_bbox=True),
    train_cfg=dict(
        pts=dict(
            point_cloud_range=point_cloud_range,
            grid_size={{_base_.grid_size}},
            voxel_size={{_base_.voxel_size}},
            out_size_factor=out_size_factor,
            dense_reg=1,
            gaussian_overlap=0.1,
            max_objs=100,
            min_radius=2,
            # reg(2) height dim(3) rot(2) and the two unused velocity entries (CenterHeadNoVelocity)
            code_weights=[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0])),
    test_cfg=dict(
        pts=dict(
            pc_range=point_cloud_range[:2],
            post_center_limit_range=[-10.0, -50.0, -10.0, 61.2, 50.0, 10.0],
            max_per_img=100,
            max_pool_nms=False,
            min_radius=[0.85, 4],
            score_threshold=0.1,
            out_size_factor=out_size_factor,
            voxel_size={{_base_._voxel_xy}},
            nms_type='rotate',
            pre_max_size=1000,
            post_max_size=83,
            nms_thr=0.1)))

