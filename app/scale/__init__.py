"""Scale-out: Dragoman as several replicas behind one address (`dragoman serve --replicas N`, docs/deploy.md).

Nothing here is imported unless `--replicas` is given; Ray is the optional extra `dragoman[ray]`.
"""
