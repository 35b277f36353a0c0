# The voxel grid and spconv SparseEncoder shared by the synthetic-KITTI voxel detectors (second_synth.py as
# middle_encoder, centerpoint_voxel_synth.py as pts_middle_encoder): 0.1 x 0.1 x 0.2 m voxels over the shared
# range (sparse grid 21 x 768 x 512), SubMConv3d / SparseConv3d at 16-32-64-64 channels, stride 8. The
# detectors take it as {{_base_._sparse_encoder}} ({{_base_.x}} cannot be sliced, hence _voxel_xy); names
# starting with "_" stay out of the config digest (training.recipe.config_sha256).
voxel_size = [0.1, 0.1, 0.2]
grid_size = [512, 768, 20]  # x, y, z voxels
_voxel_xy = voxel_size[:2]  # the BEV cell (CenterHead's coder and test_cfg)
_sparse_encoder = dict(
    type='SparseEncoder',
    in_channels=4,
    sparse_shape=[grid_size[2] + 1, grid_size[1], grid_size[0]],
    output_channels=128,
    order=('conv', 'norm', 'act'),
    encoder_channels=((16, ), (32, 32), (64, 64), (64, 64)),
    # z: 21 -> 11 -> 6 -> 3 -> conv_out (k3, s2) -> 1, so the BEV map has 128 channels
    encoder_paddings=((1, ), (1, 1), (1, 1), (1, 1)),
    block_type='conv_module')
